# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACME (RFC 8555) protocol, on top of certbot's ``acme`` library.

``AcmeClient`` wraps ``acme.client.ClientV2`` and fills the library's gaps:
``replaces`` on new-order (RFC 9773), badNonce retried more than once, 429/503
retried after Retry-After, connection errors retried with backoff, fast polling
that honours Retry-After, and CA problems turned into ``FleetcertError``.

``fetch_renewal_window`` (ARI) only needs the standard library and Ansible's
``open_url``: ``cert_info`` calls it on hosts that do not have ``acme``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import email.utils
import json
import os
import re
import time
import traceback

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import (
    FleetcertError,
    problem_error,
    problem_to_dict,
)
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import (
    validate_directory_url,
)

ACME_IMPORT_ERROR = None
try:
    import josepy as jose
    import requests
    from acme import challenges
    from acme import client as acme_lib
    from acme import errors as acme_errors
    from acme import messages
    from cryptography import x509
except ImportError:
    ACME_IMPORT_ERROR = traceback.format_exc()

# Keep in step with galaxy.yml (a unit test compares them): AnsiballZ payloads
# cannot read galaxy.yml at run time.
COLLECTION_VERSION = '0.1.0'
USER_AGENT = 'fleetcert.meteor/%s' % COLLECTION_VERSION

DEFAULT_REQUEST_TIMEOUT = 30
# Pebble rejects a configurable share of good nonces (PEBBLE_WFE_NONCEREJECT);
# at 50 % the chance of 10 rejections in a row is 0.1 %. Each retry costs one
# round trip and no rate limit.
BAD_NONCE_RETRIES = 10
# Total seconds one request may spend waiting on 429/503 Retry-After before
# the error is reported; a longer wait belongs to the next playbook run.
RETRY_AFTER_BUDGET = 60.0
# Waits before each new attempt after a connection error; then give up.
CONNECT_BACKOFF = (0.2, 0.5, 1.0, 2.0)
# Status polling: a local CA answers within milliseconds, a public one within
# seconds, so start short and double up to a bound.
POLL_FIRST_DELAY = 0.05
POLL_FACTOR = 2.0
POLL_MAX_DELAY = 2.0

HTTP01 = 'http-01'
ALREADY_REPLACED = 'urn:ietf:params:acme:error:alreadyReplaced'
# Problems to a new-order carrying ``replaces`` after which the order is sent
# once more without it. Besides alreadyReplaced: ``malformed`` (a CA that does
# not know the id) and ``serverInternal`` (Pebble 2.10 now and then answers
# "could not find order resulting in the given certificate serial number").
REPLACES_REFUSALS = ('alreadyReplaced', 'malformed', 'serverInternal')
ACCOUNT_DOES_NOT_EXIST = 'urn:ietf:params:acme:error:accountDoesNotExist'
PEM_CHAIN_CONTENT_TYPE = 'application/pem-certificate-chain'


def require_acme():
    """Raise a FleetcertError that says what to install when acme/josepy are missing."""
    if ACME_IMPORT_ERROR is not None:
        raise FleetcertError(
            'the Python libraries acme (>= 3.0) and josepy (>= 2.0) are required on the '
            'controller for this module; install them with pip',
            exception=ACME_IMPORT_ERROR)


# ---------------------------------------------------------------------------
# Pure helpers (unit tested)
# ---------------------------------------------------------------------------

def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header value, or None if absent or invalid.

    RFC 9110 section 10.2.3 allows delay-seconds or an HTTP-date; a date in the
    past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delays(first=POLL_FIRST_DELAY, factor=POLL_FACTOR, maximum=POLL_MAX_DELAY):
    """Endless exponential backoff schedule: first, first*factor, ... capped at maximum."""
    delay = first
    while True:
        yield delay
        delay = min(maximum, delay * factor)


def next_poll_delay(backoff, retry_after, remaining):
    """How long to sleep before the next poll.

    The CA's Retry-After wins over our own schedule when it is sent (RFC 8555
    section 7.5.1 asks clients to honour it), but never past the deadline.
    """
    delay = backoff if retry_after is None else retry_after
    return max(0.0, min(delay, remaining))


_RFC3339_RE = re.compile(
    r'^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?'
    r'(?:([Zz])|([+-])(\d{2}):(\d{2}))$')


def parse_rfc3339(value):
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    CAs send nanoseconds (Go's time format); datetime.fromisoformat() before
    Python 3.11 refuses them, so this truncates to microseconds itself.
    """
    match = _RFC3339_RE.match(value or '')
    if not match:
        raise ValueError('not an RFC 3339 timestamp: %r' % (value,))
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or '0')[:6].ljust(6, '0')
    if match.group(8):
        offset = datetime.timedelta(0)
    else:
        offset = datetime.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if match.group(9) == '-':
            offset = -offset
    local = datetime.datetime(year, month, day, hour, minute, second, int(fraction),
                              tzinfo=datetime.timezone(offset))
    return local.astimezone(datetime.timezone.utc)


def is_problem_type(problem, name):
    """True when an ACME problem's type is ``urn:ietf:params:acme:error:<name>``."""
    typ = getattr(problem, 'typ', None) or ''
    return typ == 'urn:ietf:params:acme:error:' + name


def top_issuer_name(chain):
    """Common name of the issuer of a chain's topmost certificate (leaf first), or None."""
    from cryptography.x509.oid import NameOID

    if not chain:
        return None
    names = chain[-1].issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else None


def pick_chain(chains, preferred_issuer):
    """The chain whose topmost issuer CN is ``preferred_issuer``, else the first (default).

    Mirrors certbot's --preferred-chain: a preference the CA cannot satisfy is
    not an error.
    """
    for chain in chains:
        if preferred_issuer and top_issuer_name(chain) == preferred_issuer:
            return chain
    return chains[0]


def validation_url(challenge_json, name=None):
    """The URL the CA fetched for an HTTP-01 challenge.

    The last ``validationRecord`` URL (after redirects) when the CA sends one;
    otherwise (Pebble sends none) the URL RFC 8555 section 8.3 makes it fetch
    first, ``http://<name>/.well-known/acme-challenge/<token>``.
    """
    records = challenge_json.get('validationRecord') or []
    for record in reversed(records):
        if record.get('url'):
            return record['url']
    token = challenge_json.get('token')
    if name and token:
        return 'http://%s/.well-known/acme-challenge/%s' % (name, token)
    return None


# ---------------------------------------------------------------------------
# ARI (RFC 9773): stdlib + open_url only, runs on any host
# ---------------------------------------------------------------------------

def _open_json(url, ca_bundle, timeout):
    try:
        response = open_url(url, method='GET', ca_path=ca_bundle, timeout=timeout,
                            http_agent=USER_AGENT, validate_certs=True)
        return json.loads(response.read().decode('utf-8')), response.headers
    except HTTPError as exc:
        body = {}
        try:
            body = json.loads(exc.read().decode('utf-8'))
        except (ValueError, AttributeError, UnicodeDecodeError):
            pass
        raise FleetcertError(
            'GET %s failed with HTTP %s: %s' % (url, exc.code, body.get('detail') or exc.reason),
            url=url, status=exc.code,
            problem={'type': body.get('type'), 'detail': body.get('detail'),
                     'status': exc.code, 'subproblems': [], 'url': None})
    except (URLError, OSError) as exc:
        raise FleetcertError('cannot reach %s: %s' % (url, getattr(exc, 'reason', exc)), url=url)
    except ValueError:
        raise FleetcertError('%s did not answer with JSON' % url, url=url)


def fetch_renewal_window(directory_url, cert, ca_bundle=None, timeout=10):
    """Ask the CA for its suggested renewal window of ``cert`` (ARI, RFC 9773).

    ``cert`` is an ``x509.Certificate``. Returns None when the directory has no
    ``renewalInfo``; otherwise a dict with ``start`` and ``end`` (aware UTC
    datetimes), ``explanation_url`` (str or None) and ``retry_after`` (seconds
    until the CA wants to be asked again, or None when it did not say).
    Raises FleetcertError on network or CA errors.
    """
    directory, dummy = _open_json(directory_url, ca_bundle, timeout)
    base = directory.get('renewalInfo') if isinstance(directory, dict) else None
    if not base:
        return None
    url = base.rstrip('/') + '/' + crypto.ari_cert_id(cert)
    info, headers = _open_json(url, ca_bundle, timeout)
    try:
        window = info['suggestedWindow']
        start = parse_rfc3339(window['start'])
        end = parse_rfc3339(window['end'])
    except (KeyError, TypeError, ValueError) as exc:
        raise FleetcertError('%s returned no valid suggestedWindow: %s' % (url, exc), url=url)
    return {
        'start': start,
        'end': end,
        'explanation_url': info.get('explanationURL'),
        'retry_after': parse_retry_after(headers.get('Retry-After')),
    }


# ---------------------------------------------------------------------------
# Shared module options
# ---------------------------------------------------------------------------

def acme_argument_spec():
    """Options shared by the ACME modules; documented in doc_fragments/acme.py."""
    return dict(
        directory_url=dict(type='str', required=True),
        account_key_content=dict(type='str', no_log=True),
        account_key_path=dict(type='path', no_log=False),
        account_uri=dict(type='str'),
        ca_bundle=dict(type='path'),
        allow_insecure_directory=dict(type='bool', default=False),
        request_timeout=dict(type='int', default=DEFAULT_REQUEST_TIMEOUT),
    )


ACME_MUTUALLY_EXCLUSIVE = [('account_key_content', 'account_key_path')]


def validate_acme_params(params):
    """Check the shared options before any network call; returns the directory URL."""
    url = validate_directory_url(params['directory_url'],
                                 allow_insecure=params['allow_insecure_directory'],
                                 option='directory_url')
    if params['request_timeout'] < 1:
        raise FleetcertError('request_timeout: must be at least 1 second, got %d'
                             % params['request_timeout'])
    bundle = params.get('ca_bundle')
    if bundle is not None and not os.access(bundle, os.R_OK):
        raise FleetcertError('ca_bundle: %s does not exist or is not readable' % bundle)
    uri = params.get('account_uri')
    if uri is not None and not uri.lower().startswith(('https://', 'http://')):
        raise FleetcertError('account_uri: %r is not an http(s) URL' % uri)
    return url


def load_account_key(params):
    """The account key from ``account_key_content`` or ``account_key_path``."""
    if params.get('account_key_content'):
        return crypto.load_private_key(params['account_key_content'].encode('utf-8'),
                                       'account_key_content')
    path = params.get('account_key_path')
    if not path:
        raise FleetcertError('one of account_key_content or account_key_path is required')
    try:
        with open(path, 'rb') as handle:
            pem = handle.read()
    except (IOError, OSError) as exc:
        raise FleetcertError('account_key_path: cannot read %s: %s' % (path, exc.strerror or exc))
    return crypto.load_private_key(pem, 'account_key_path')


def client_from_params(params, account_key):
    """An AcmeClient for validated shared options (no network traffic yet)."""
    return AcmeClient(params['directory_url'], account_key,
                      ca_bundle=params.get('ca_bundle'),
                      timeout=params['request_timeout'],
                      account_uri=params.get('account_uri'))


# ---------------------------------------------------------------------------
# The protocol (needs acme + josepy)
# ---------------------------------------------------------------------------

if ACME_IMPORT_ERROR is None:

    class NewOrder(messages.NewOrder):
        """new-order payload with RFC 9773 ``replaces`` (the library has no such field)."""

        replaces: str = jose.field('replaces', omitempty=True)

    class Order(messages.Order):
        """Order object as the CA returns it, with RFC 9773 ``replaces``."""

        replaces: str = jose.field('replaces', omitempty=True)

    class RetryingNetwork(acme_lib.ClientNetwork):
        """``ClientNetwork`` that survives what real CAs and Pebble throw at it.

        - every Replay-Nonce is kept, including those on error responses (the
          library drops them and spends a HEAD new-nonce per failure);
        - badNonce is retried up to BAD_NONCE_RETRIES times (library: once);
        - 429 and 503 are retried after Retry-After within RETRY_AFTER_BUDGET;
        - connection errors are retried with CONNECT_BACKOFF, then reported
          with the URL; TLS verification errors are reported at once;
        - problem documents carry ``status`` and ``retry_after`` attributes;
        - a 409 problem (``alreadyReplaced``) stays a problem instead of the
          library's location-only ConflictError.
        """

        def __init__(self, sleep=time.sleep, **kwargs):
            super(RetryingNetwork, self).__init__(**kwargs)
            self._sleep = sleep
            self.request_count = 0

        def _send_request(self, method, url, *args, **kwargs):
            delays = iter(CONNECT_BACKOFF)
            attempts = 0
            while True:
                attempts += 1
                self.request_count += 1
                try:
                    return super(RetryingNetwork, self)._send_request(method, url, *args, **kwargs)
                except requests.exceptions.SSLError as exc:
                    raise FleetcertError(
                        'TLS verification of %s failed (is ca_bundle right?): %s' % (url, exc),
                        url=url)
                except requests.exceptions.ConnectionError as exc:
                    delay = next(delays, None)
                    if delay is None:
                        raise FleetcertError(
                            'cannot reach the ACME server at %s after %d attempts: %s'
                            % (url, attempts, exc), url=url)
                    self._sleep(delay)
                except requests.exceptions.Timeout:
                    # Not retried: a POST may have been processed already.
                    raise FleetcertError('the ACME server at %s did not answer within %s s'
                                         % (url, self._default_timeout), url=url)

        def _remember_nonce(self, response):
            if self.REPLAY_NONCE_HEADER in response.headers:
                try:
                    self._add_nonce(response)
                except acme_errors.BadNonce:
                    pass

        def _check_response(self, response, content_type=None):
            self._remember_nonce(response)
            if response.status_code == 409:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if isinstance(body, dict) and body.get('type'):
                    error = messages.Error.from_json(body)
                    error.status = 409
                    error.retry_after = None
                    raise error
            try:
                return super(RetryingNetwork, self)._check_response(response,
                                                                    content_type=content_type)
            except messages.Error as error:
                error.status = response.status_code
                error.retry_after = parse_retry_after(response.headers.get('Retry-After'))
                raise

        def _retry_after_delay(self, error, waited):
            """Seconds to wait before retrying after a 429/503 problem, or None."""
            if getattr(error, 'status', None) not in (429, 503):
                return None
            delay = getattr(error, 'retry_after', None)
            if delay is None:
                delay = 1.0
            if waited + delay > RETRY_AFTER_BUDGET:
                return None
            return delay

        def _retrying(self, send):
            bad_nonces = 0
            waited = 0.0
            while True:
                try:
                    return send()
                except messages.Error as error:
                    if error.code == 'badNonce' and bad_nonces < BAD_NONCE_RETRIES:
                        bad_nonces += 1
                        continue
                    delay = self._retry_after_delay(error, waited)
                    if delay is None:
                        raise
                    self._sleep(delay)
                    waited += delay

        def post(self, *args, **kwargs):
            return self._retrying(lambda: self._post_once(*args, **dict(kwargs)))

        def get(self, url, content_type=acme_lib.ClientNetwork.JSON_CONTENT_TYPE, **kwargs):
            parent = super(RetryingNetwork, self)
            return self._retrying(lambda: parent.get(url, content_type=content_type, **dict(kwargs)))


class AcmeClient(object):
    """One ACME account at one CA.

    The directory is fetched once, on first use; every request goes through one
    keep-alive session. ``deadline`` arguments are ``time.monotonic()`` values.
    """

    def __init__(self, directory_url, account_key, ca_bundle=None,
                 timeout=DEFAULT_REQUEST_TIMEOUT, user_agent=USER_AGENT,
                 account_uri=None, sleep=time.sleep):
        require_acme()
        self.directory_url = directory_url
        self.account_key = account_key
        self.jwk = crypto.jwk_for_key(account_key)
        self._sleep = sleep
        # verify_ssl gets the bundle path explicitly: with True, requests would
        # trust REQUESTS_CA_BUNDLE from the environment instead of our option.
        self.net = RetryingNetwork(key=self.jwk, alg=crypto.jws_algorithm(account_key),
                                   verify_ssl=ca_bundle if ca_bundle else True,
                                   user_agent=user_agent, timeout=timeout, sleep=sleep)
        self._lib = None
        self._thumbprint = None
        self.account_uri = None
        if account_uri:
            self._use_account(account_uri, messages.Registration())

    # -- plumbing ----------------------------------------------------------

    @property
    def request_count(self):
        """HTTP requests sent so far (retries included)."""
        return self.net.request_count

    @property
    def lib(self):
        """The wrapped ``acme.client.ClientV2``; the first access fetches the directory."""
        if self._lib is None:
            with self._errors('fetching the ACME directory %s' % self.directory_url):
                try:
                    directory = acme_lib.ClientV2.get_directory(self.directory_url, self.net)
                except (ValueError, jose.DeserializationError) as exc:
                    raise FleetcertError('%s is not an ACME directory: %s'
                                         % (self.directory_url, exc), url=self.directory_url)
            for needed in ('newNonce', 'newAccount', 'newOrder'):
                try:
                    directory[needed]
                except KeyError:
                    raise FleetcertError('%s is not an ACME directory: no %s'
                                         % (self.directory_url, needed), url=self.directory_url)
            self._lib = acme_lib.ClientV2(directory, self.net)
        return self._lib

    @property
    def directory(self):
        return self.lib.directory

    @property
    def thumbprint(self):
        """RFC 7638 thumbprint of the account key (the HTTP-01 key authorization suffix)."""
        if self._thumbprint is None:
            self._thumbprint = crypto.jwk_thumbprint(self.account_key)
        return self._thumbprint

    @contextlib.contextmanager
    def _errors(self, context):
        """Turn library exceptions into FleetcertError naming what was attempted."""
        try:
            yield
        except FleetcertError:
            raise
        except messages.Error as error:
            raise problem_error(error, context, status=getattr(error, 'status', None))
        except acme_errors.Error as error:
            raise FleetcertError('%s failed: %s' % (context, error))
        except jose.DeserializationError as error:
            raise FleetcertError('%s failed: the CA sent an unexpected answer: %s' % (context, error))

    def _post(self, url, obj):
        return self.net.post(url, obj, new_nonce_url=self.directory['newNonce'])

    def _post_as_get(self, url):
        return self._post(url, None)

    def _use_account(self, uri, body):
        self.account_uri = uri
        # The library signs with "kid" once net.account is set.
        self.net.account = messages.RegistrationResource(body=body, uri=uri)

    def _require_account(self):
        if self.account_uri is None and self.find_account() is None:
            raise FleetcertError(
                'no ACME account exists for this account key at %s; create it with '
                'fleetcert.meteor.acme_account first' % self.directory_url)

    # -- accounts ------------------------------------------------------------

    def _new_account(self, registration):
        """POST new-account; returns (response, registration body) or None if none exists."""
        self.net.account = None
        try:
            response = self._post(self.directory['newAccount'], registration)
        except messages.Error as error:
            if is_problem_type(error, 'accountDoesNotExist'):
                return None
            raise
        body = messages.Registration.from_json(response.json())
        self._use_account(response.headers['Location'], body)
        return response, body

    @staticmethod
    def _account_info(response, body, created=False, updated=False, previous=None):
        contacts = list(body.contact or ())
        return {
            'uri': response.headers['Location'],
            'created': created,
            'updated': updated,
            # Registration.status has no decoder in the library: a plain string.
            'status': getattr(body.status, 'name', body.status),
            'contacts': contacts,
            'previous_contacts': None if created else (contacts if previous is None
                                                       else list(previous)),
        }

    def find_account(self):
        """The existing account of this key (dict, see register_or_find_account) or None."""
        with self._errors('looking up the ACME account at %s' % self.directory_url):
            found = self._new_account(messages.NewRegistration(only_return_existing=True))
        if found is None:
            return None
        return self._account_info(*found)

    def register_or_find_account(self, contacts, agree_tos, eab_kid=None, eab_hmac_key=None,
                                 only_existing=False):
        """Make sure the account exists with exactly ``contacts`` ('mailto:' URIs).

        Returns a dict ``uri``, ``created``, ``updated``, ``status``, ``contacts``
        and ``previous_contacts`` (None when created).
        With ``only_existing`` nothing is created or changed: returns None if
        there is no account, else the dict with ``updated`` saying whether the
        contacts would change (for check mode).
        """
        contacts = list(contacts or ())
        if only_existing:
            info = self.find_account()
            if info is not None:
                info['updated'] = sorted(info['contacts']) != sorted(contacts)
            return info
        context = 'registering the ACME account at %s' % self.directory_url
        with self._errors(context):
            eab = None
            if eab_kid:
                try:
                    eab = messages.ExternalAccountBinding.from_data(
                        self.jwk.public_key(), eab_kid, eab_hmac_key, self.directory)
                except (ValueError, TypeError) as exc:
                    raise FleetcertError('eab_hmac_key: not a base64url-encoded key: %s' % exc)
            elif self.lib.external_account_required():
                raise FleetcertError(
                    'the CA at %s requires external account binding: set eab_kid and '
                    'eab_hmac_key' % self.directory_url)
            registration = messages.NewRegistration(
                contact=tuple(contacts), terms_of_service_agreed=bool(agree_tos),
                external_account_binding=eab)
            response, body = self._new_account(registration)
            created = response.status_code == 201
            updated = False
            previous = list(body.contact or ())
            if not created and sorted(previous) != sorted(contacts):
                reply = self._post(self.account_uri,
                                   messages.UpdateRegistration(contact=tuple(contacts)))
                body = messages.Registration.from_json(reply.json())
                self._use_account(self.account_uri, body)
                updated = True
        return self._account_info(response, body, created=created, updated=updated,
                                  previous=previous)

    # -- orders --------------------------------------------------------------

    def _fetch_authorization(self, url):
        response = self._post_as_get(url)
        return messages.AuthorizationResource(
            body=messages.Authorization.from_json(response.json()), uri=url)

    def _order_resource(self, response, uri):
        body = Order.from_json(response.json())
        # Authorizations are fetched here once; later steps work on the order URL.
        authorizations = [self._fetch_authorization(url) for url in body.authorizations or ()]
        return messages.OrderResource(body=body, uri=uri, authorizations=authorizations)

    def new_order(self, names, profile=None, replaces=None):
        """Create an order for ``names`` (already normalized).

        ``replaces`` is the ARI cert id of the certificate this one renews. When
        the CA refuses it (REPLACES_REFUSALS: ``alreadyReplaced`` per RFC 9773
        section 5, or a CA that cannot match the id) the order is sent once more
        without it: a renewal must not fail over a rate-limit hint. Returns
        ``(order, refusal)``: refusal is None, or the CA's problem as a dict.
        """
        self._require_account()
        context = 'creating an order for %s' % ', '.join(names)
        with self._errors(context):
            if profile:
                meta = getattr(self.directory, 'meta', None)
                offered = getattr(meta, 'profiles', None) or {}
                if profile not in offered:
                    raise FleetcertError(
                        'profile: %r is not offered by %s (offered: %s)'
                        % (profile, self.directory_url, ', '.join(sorted(offered)) or 'none'))
            identifiers = tuple(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                                for name in names)
            request = NewOrder(identifiers=identifiers, profile=profile or None,
                               replaces=replaces or None)
            refusal = None
            try:
                response = self._post(self.directory['newOrder'], request)
            except messages.Error as error:
                if not (replaces and any(is_problem_type(error, kind) for kind in REPLACES_REFUSALS)):
                    raise
                refusal = problem_to_dict(error)
                request = NewOrder(identifiers=identifiers, profile=profile or None)
                response = self._post(self.directory['newOrder'], request)
            order = self._order_resource(response, response.headers.get('Location'))
        return order, refusal

    def get_order(self, order_uri):
        """Fetch an existing order (and its authorizations) by URL."""
        self._require_account()
        with self._errors('fetching the order %s' % order_uri):
            return self._order_resource(self._post_as_get(order_uri), order_uri)

    def _http01(self, authzr):
        for challb in authzr.body.challenges or ():
            if isinstance(challb.chall, challenges.HTTP01):
                return challb
        return None

    def order_challenges(self, order):
        """HTTP-01 challenges of an order: a list of dicts, one per name.

        Keys: ``name``, ``token``, ``key_authorization``, ``path``, ``url``
        (the challenge URL) and ``status`` (of the authorization: ``valid``
        ones need no answer). Nothing here is secret.
        """
        result = []
        for authzr in order.authorizations:
            name = authzr.body.identifier.value
            challb = self._http01(authzr)
            status = authzr.body.status.name
            if challb is None:
                if status == 'valid':
                    continue
                raise FleetcertError('the CA offers no http-01 challenge for %s' % name,
                                     authorization=authzr.uri)
            token = challb.chall.encode('token')
            result.append({
                'name': name,
                'token': token,
                'key_authorization': '%s.%s' % (token, self.thumbprint),
                'path': challb.chall.path,
                'url': challb.uri,
                'status': status,
            })
        return result

    def answer_challenges(self, order):
        """Tell the CA to validate every pending HTTP-01 challenge; returns how many."""
        answered = 0
        with self._errors('answering the challenges of %s' % order.uri):
            for authzr in order.authorizations:
                if authzr.body.status != messages.STATUS_PENDING:
                    continue
                challb = self._http01(authzr)
                if challb is None:
                    raise FleetcertError('the CA offers no http-01 challenge for %s'
                                         % authzr.body.identifier.value)
                if challb.status not in (messages.STATUS_PENDING,):
                    continue
                self.lib.answer_challenge(challb, challb.chall.response(self.jwk))
                answered += 1
        return answered

    def _poll(self, url, until, deadline, what, first_wait=None):
        """POST-as-GET ``url`` until ``until(json)`` is true; returns (json, response).

        ``first_wait``: seconds to wait before the first request (None: none).
        """
        delays = backoff_delays()
        if first_wait is not None:
            self._sleep(next_poll_delay(first_wait, None, deadline - time.monotonic()))
        while True:
            response = self._post_as_get(url)
            body = response.json()
            if until(body):
                return body, response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FleetcertError('timed out waiting for %s (status is still %s)'
                                     % (what, body.get('status')), url=url)
            retry_after = parse_retry_after(response.headers.get('Retry-After'))
            self._sleep(next_poll_delay(next(delays), retry_after, remaining))

    def _validation_failure(self, order_json, order_uri):
        """The FleetcertError for an order whose validation failed."""
        failures = []
        for url in order_json.get('authorizations') or ():
            authz = self._post_as_get(url).json()
            if authz.get('status') == 'valid':
                continue
            for challenge in authz.get('challenges') or ():
                if challenge.get('error'):
                    failures.append((authz.get('identifier', {}).get('value'), challenge))
        if not failures:
            problem = order_json.get('error')
            if problem:
                raise problem_error(messages.Error.from_json(problem),
                                    'validating order %s' % order_uri, order_uri=order_uri)
            raise FleetcertError('the order %s became invalid without a reason from the CA'
                                 % order_uri, order_uri=order_uri)
        name, challenge = failures[0]
        others = [{'name': other_name,
                   'problem': dict(type=other['error'].get('type'),
                                   detail=other['error'].get('detail'),
                                   url=validation_url(other, other_name))}
                  for other_name, other in failures]
        return problem_error(messages.Error.from_json(challenge['error']),
                             'HTTP-01 validation of %s' % name,
                             status=challenge['error'].get('status'),
                             url=validation_url(challenge, name),
                             order_uri=order_uri, failed=others)

    def wait_for_authorizations(self, order, deadline):
        """Poll the order until the CA has decided every authorization.

        One request per poll however many names the order has. Returns the
        order's JSON (status ``ready``, or later). Raises FleetcertError with the
        CA's problem and the URL it fetched when a validation failed; a failed
        validation is never retried here (it would count against rate limits).
        """
        with self._errors('validating order %s' % order.uri):
            # No poll right after answering: the CA has not even started; the
            # first poll waits one backoff step.
            body, dummy = self._poll(order.uri, lambda o: o.get('status') != 'pending',
                                     deadline, 'the validation of %s' % order.uri,
                                     first_wait=POLL_FIRST_DELAY)
            if body.get('status') == 'invalid':
                raise self._validation_failure(body, order.uri)
        return body

    def finalize(self, order, csr_pem, deadline):
        """Send the CSR and wait until the certificate is issued; returns the order JSON."""
        with self._errors('finalizing order %s' % order.uri):
            csr = x509.load_pem_x509_csr(csr_pem)
            response = self._post(order.body.finalize, messages.CertificateRequest(csr=csr))
        body = response.json()
        if body.get('status') in ('valid', 'invalid'):
            return self._issued(body, order.uri)
        # "processing": RFC 8555 section 7.4 says to poll after Retry-After;
        # without one, issuance is usually done by the time the poll arrives.
        return self.wait_for_certificate(
            order, deadline, first_wait=parse_retry_after(response.headers.get('Retry-After')))

    def wait_for_certificate(self, order, deadline, first_wait=None):
        """Poll a finalized order until it is valid; returns the order JSON."""
        with self._errors('waiting for the certificate of order %s' % order.uri):
            body, dummy = self._poll(order.uri,
                                     lambda o: o.get('status') in ('valid', 'invalid'),
                                     deadline, 'the certificate of %s' % order.uri,
                                     first_wait=first_wait)
        return self._issued(body, order.uri)

    def _issued(self, body, order_uri):
        if body.get('status') == 'invalid':
            problem = body.get('error')
            if problem:
                raise problem_error(messages.Error.from_json(problem),
                                    'finalizing order %s' % order_uri, order_uri=order_uri)
            raise FleetcertError('the CA refused to issue order %s without a reason'
                                 % order_uri, order_uri=order_uri)
        if not body.get('certificate'):
            raise FleetcertError('order %s is valid but has no certificate URL' % order_uri,
                                 order_uri=order_uri)
        return body

    def complete_order(self, order, csr_pem, deadline, preferred_chain=None):
        """Take an order from wherever it is to a downloaded certificate.

        pending: answer the challenges, wait, finalize; ready: finalize;
        processing/valid (finalized before, e.g. by an interrupted run): wait
        and download; invalid: raise the validation failure. Returns the chain
        as a list of ``x509.Certificate``, leaf first.
        """
        status = order.body.status.name
        if status in ('pending', 'invalid'):
            if status == 'pending':
                self.answer_challenges(order)
            self.wait_for_authorizations(order, deadline)
        if status in ('pending', 'ready'):
            body = self.finalize(order, csr_pem, deadline)
        else:
            body = self.wait_for_certificate(order, deadline)
        return self.download_chains(body['certificate'], preferred_chain)

    def _download(self, url):
        response = self.net.post(url, None, new_nonce_url=self.directory['newNonce'],
                                 headers={'Content-Type': self.net.JOSE_CONTENT_TYPE,
                                          'Accept': PEM_CHAIN_CONTENT_TYPE})
        return response.content, self.lib._get_links(response, 'alternate')

    def download_chains(self, certificate_url, preferred_chain=None):
        """Download the certificate; with ``preferred_chain``, pick among alternate chains.

        Returns a list of ``x509.Certificate`` (leaf first). Alternates (Link
        rel=alternate) are only fetched when the default chain's topmost issuer
        is not ``preferred_chain``.
        """
        with self._errors('downloading the certificate %s' % certificate_url):
            pem, alternates = self._download(certificate_url)
            chains = [crypto.split_pem_chain(pem)]
            if not preferred_chain or top_issuer_name(chains[0]) == preferred_chain:
                return chains[0]
            for url in alternates:
                chains.append(crypto.split_pem_chain(self._download(url)[0]))
                if top_issuer_name(chains[-1]) == preferred_chain:
                    break
        return pick_chain(chains, preferred_chain)
