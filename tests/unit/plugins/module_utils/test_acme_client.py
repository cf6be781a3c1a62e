# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of acme_client: Retry-After, backoff, message shapes, problem mapping.

Everything that talks to a CA is tested against real Pebble in
tests/integration/test_acme_*.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

import pytest
import yaml
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.fleetcert.meteor.plugins.doc_fragments.acme import ModuleDocFragment
from ansible_collections.fleetcert.meteor.plugins.module_utils import acme_client
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import (
    FleetcertError,
    problem_error,
    problem_to_dict,
)

UTC = datetime.timezone.utc
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))


# -- Retry-After ---------------------------------------------------------------

@pytest.mark.parametrize('value, expected', [
    ('0', 0.0),
    ('3', 3.0),
    (' 120 ', 120.0),
    (None, None),
    ('', None),
    ('soon', None),
    ('-5', None),
    ('1.5', None),
])
def test_parse_retry_after_seconds(value, expected):
    assert acme_client.parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_the_future():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert acme_client.parse_retry_after('Thu, 01 Jan 2026 12:00:30 GMT', now=now) == 30.0


def test_parse_retry_after_http_date_in_the_past_means_now():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert acme_client.parse_retry_after('Thu, 01 Jan 2026 11:00:00 GMT', now=now) == 0.0


def test_parse_retry_after_rfc850_date():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert acme_client.parse_retry_after('Thursday, 01-Jan-26 12:01:00 GMT', now=now) == 60.0


# -- backoff -------------------------------------------------------------------

def test_backoff_schedule_starts_short_doubles_and_is_bounded():
    delays = acme_client.backoff_delays()
    first = [next(delays) for dummy in range(9)]
    assert first == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


def test_backoff_schedule_parameters():
    delays = acme_client.backoff_delays(first=1, factor=3, maximum=10)
    assert [next(delays) for dummy in range(4)] == [1, 3, 9, 10]


@pytest.mark.parametrize('backoff, retry_after, remaining, expected', [
    (0.05, None, 60, 0.05),      # own schedule when the CA says nothing
    (0.05, 3.0, 60, 3.0),        # Retry-After wins, even when longer
    (2.0, 0.0, 60, 0.0),         # ... and when shorter
    (0.05, 30.0, 5, 5),          # never past the deadline
    (0.4, None, 0.1, 0.1),
    (0.4, None, -1, 0.0),
])
def test_next_poll_delay(backoff, retry_after, remaining, expected):
    assert acme_client.next_poll_delay(backoff, retry_after, remaining) == expected


# -- RFC 3339 ------------------------------------------------------------------

@pytest.mark.parametrize('value, expected', [
    ('2026-03-01T10:00:00Z', datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)),
    ('2026-03-01T10:00:00.123456789Z',
     datetime.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ('2026-03-01T10:00:00.5Z', datetime.datetime(2026, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ('2026-03-01T12:30:00+02:30', datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)),
    ('2026-03-01T08:00:00-02:00', datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)),
])
def test_parse_rfc3339(value, expected):
    parsed = acme_client.parse_rfc3339(value)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize('value', ['', None, '2026-03-01', '2026-03-01T10:00:00', 'yesterday'])
def test_parse_rfc3339_rejects(value):
    with pytest.raises(ValueError):
        acme_client.parse_rfc3339(value)


# -- new-order payload -----------------------------------------------------------

IDENTIFIERS = (messages.Identifier(typ=messages.IDENTIFIER_FQDN, value='a.example.com'),
               messages.Identifier(typ=messages.IDENTIFIER_FQDN, value='b.example.com'))


def test_new_order_with_replaces_and_profile():
    payload = acme_client.NewOrder(identifiers=IDENTIFIERS, profile='shortlived',
                                   replaces='aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE')
    assert json.loads(payload.json_dumps()) == {
        'identifiers': [{'type': 'dns', 'value': 'a.example.com'},
                        {'type': 'dns', 'value': 'b.example.com'}],
        'profile': 'shortlived',
        'replaces': 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE',
    }


def test_new_order_without_replaces_omits_the_field():
    payload = acme_client.NewOrder(identifiers=IDENTIFIERS, profile=None, replaces=None)
    assert json.loads(payload.json_dumps()) == {
        'identifiers': [{'type': 'dns', 'value': 'a.example.com'},
                        {'type': 'dns', 'value': 'b.example.com'}],
    }


def test_new_order_is_the_library_message():
    # Sent through the library's own JWS path, which takes any JSONDeSerializable;
    # being a NewOrder keeps it interchangeable with what ClientV2 sends.
    assert issubclass(acme_client.NewOrder, messages.NewOrder)


# -- problem documents -----------------------------------------------------------

PROBLEM = {
    'type': 'urn:ietf:params:acme:error:rejectedIdentifier',
    'detail': 'Some identifiers were rejected',
    'status': 400,
    'subproblems': [{
        'type': 'urn:ietf:params:acme:error:malformed',
        'detail': 'Invalid underscore in DNS name',
        'identifier': {'type': 'dns', 'value': '_example.com'},
    }],
}


def test_problem_to_dict_maps_type_detail_status_subproblems_url():
    error = messages.Error.from_json(PROBLEM)
    info = problem_to_dict(error, status=400, url='http://x.example/.well-known/acme-challenge/t')
    assert info == {
        'type': 'urn:ietf:params:acme:error:rejectedIdentifier',
        'detail': 'Some identifiers were rejected',
        'status': 400,
        'url': 'http://x.example/.well-known/acme-challenge/t',
        'retry_after': None,
        'subproblems': [{
            'type': 'urn:ietf:params:acme:error:malformed',
            'detail': 'Invalid underscore in DNS name',
            'status': None,
            'subproblems': [],
            'url': None,
            'retry_after': None,
            'identifier': '_example.com',
        }],
    }


def test_problem_error_message_names_context_type_detail_url_and_subproblems():
    error = messages.Error.from_json(PROBLEM)
    exc = problem_error(error, 'creating an order for _example.com', status=400,
                        url='http://x.example/p', order_uri='https://ca/order/1')
    assert isinstance(exc, FleetcertError)
    assert exc.msg.startswith('creating an order for _example.com failed: '
                              'urn:ietf:params:acme:error:rejectedIdentifier: '
                              'Some identifiers were rejected')
    assert '(the CA fetched http://x.example/p)' in exc.msg
    assert '_example.com: urn:ietf:params:acme:error:malformed: Invalid underscore' in exc.msg
    assert exc.details['order_uri'] == 'https://ca/order/1'
    assert exc.details['problem']['status'] == 400
    # fail_json(**details) must be able to serialise it
    json.dumps(exc.details)


def test_problem_error_says_when_the_ca_allows_a_retry():
    error = messages.Error.from_json({'type': 'urn:ietf:params:acme:error:rateLimited',
                                      'detail': 'too many new orders'})
    error.status, error.retry_after = 429, 3600
    exc = problem_error(error, 'creating an order', status=429)
    assert exc.msg == ('creating an order failed: urn:ietf:params:acme:error:rateLimited: '
                       'too many new orders (the CA asks to retry after 3600 s)')
    assert exc.details['problem']['retry_after'] == 3600


def test_problem_status_attribute_is_used_when_not_given():
    error = messages.Error.from_json({'type': 'urn:ietf:params:acme:error:badNonce'})
    error.status = 400
    assert problem_to_dict(error)['status'] == 400


def test_is_problem_type():
    error = messages.Error.from_json({'type': acme_client.ALREADY_REPLACED, 'detail': 'x'})
    assert acme_client.is_problem_type(error, 'alreadyReplaced')
    assert not acme_client.is_problem_type(error, 'malformed')
    # alreadyReplaced is too new for the library's table: code is None
    assert error.code is None


def test_validation_url_takes_the_last_fetched_url():
    challenge = {'validationRecord': [
        {'url': 'http://a.example/.well-known/acme-challenge/t', 'hostname': 'a.example'},
        {'url': 'https://a.example/.well-known/acme-challenge/t', 'hostname': 'a.example'},
    ]}
    assert acme_client.validation_url(challenge, 'a.example') == \
        'https://a.example/.well-known/acme-challenge/t'
    assert acme_client.validation_url({}) is None


def test_validation_url_without_records_is_the_rfc_8555_url():
    challenge = {'type': 'http-01', 'token': 'tok_en-1', 'status': 'invalid'}
    assert acme_client.validation_url(challenge, 'a.example') == \
        'http://a.example/.well-known/acme-challenge/tok_en-1'


# -- retry decisions -------------------------------------------------------------

def _error(code, status, retry_after=None):
    error = messages.Error.from_json({'type': 'urn:ietf:params:acme:error:' + code})
    error.status = status
    error.retry_after = retry_after
    return error


def _network(sleeps):
    return acme_client.RetryingNetwork(sleep=sleeps.append)


def test_bad_nonce_is_retried_without_sleeping():
    sleeps = []
    failures = [_error('badNonce', 400) for dummy in range(acme_client.BAD_NONCE_RETRIES)]

    def send():
        if failures:
            raise failures.pop()
        return 'ok'

    assert _network(sleeps)._retrying(send) == 'ok'
    assert sleeps == []


def test_bad_nonce_gives_up_after_the_limit():
    def send():
        raise _error('badNonce', 400)

    with pytest.raises(messages.Error):
        _network([])._retrying(send)


def test_rate_limit_waits_for_retry_after_then_succeeds():
    sleeps = []
    failures = [_error('rateLimited', 429, 2.0), _error('serverInternal', 503, None)]

    def send():
        if failures:
            raise failures.pop(0)
        return 'ok'

    assert _network(sleeps)._retrying(send) == 'ok'
    assert sleeps == [2.0, 1.0]


def test_rate_limit_beyond_the_budget_is_reported_at_once():
    sleeps = []

    def send():
        raise _error('rateLimited', 429, acme_client.RETRY_AFTER_BUDGET + 1)

    with pytest.raises(messages.Error) as info:
        _network(sleeps)._retrying(send)
    assert info.value.status == 429
    assert sleeps == []


def test_total_retry_after_wait_is_bounded():
    sleeps = []

    def send():
        raise _error('rateLimited', 429, 25.0)

    with pytest.raises(messages.Error):
        _network(sleeps)._retrying(send)
    assert sleeps == [25.0, 25.0]
    assert sum(sleeps) <= acme_client.RETRY_AFTER_BUDGET


def test_other_problems_are_not_retried():
    calls = []

    def send():
        calls.append(1)
        raise _error('unauthorized', 403)

    with pytest.raises(messages.Error):
        _network([])._retrying(send)
    assert len(calls) == 1


# -- chains ----------------------------------------------------------------------

def _cert(subject_cn, issuer_cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_pick_chain_by_topmost_issuer():
    default = [_cert('leaf', 'Int A'), _cert('Int A', 'Root X1')]
    alternate = [_cert('leaf', 'Int B'), _cert('Int B', 'Root X2')]
    assert acme_client.top_issuer_name(default) == 'Root X1'
    assert acme_client.pick_chain([default, alternate], 'Root X2') is alternate
    assert acme_client.pick_chain([default, alternate], 'Root X1') is default


def test_pick_chain_falls_back_to_the_default():
    default = [_cert('leaf', 'Int A')]
    alternate = [_cert('leaf', 'Int B')]
    assert acme_client.pick_chain([default, alternate], 'Nobody') is default
    assert acme_client.pick_chain([default, alternate], None) is default
    assert acme_client.top_issuer_name([]) is None


# -- options and metadata --------------------------------------------------------

def test_argument_spec_matches_the_doc_fragment():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']
    spec = acme_client.acme_argument_spec()
    assert sorted(spec) == sorted(documented)
    for name, option in spec.items():
        assert option['type'] == documented[name]['type'], name
        assert option.get('default') == documented[name].get('default'), name
        assert bool(option.get('required')) == bool(documented[name].get('required')), name
    assert spec['account_key_content']['no_log'] is True


def test_user_agent_version_matches_galaxy_yml():
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        galaxy = yaml.safe_load(handle)
    assert acme_client.COLLECTION_VERSION == galaxy['version']
    assert acme_client.USER_AGENT == 'fleetcert.meteor/%s' % galaxy['version']


def test_validate_acme_params_rejects_before_any_network():
    params = dict(directory_url='http://ca.example/dir', allow_insecure_directory=False,
                  request_timeout=30, ca_bundle=None, account_uri=None)
    with pytest.raises(FleetcertError) as info:
        acme_client.validate_acme_params(params)
    assert info.value.msg.startswith('directory_url')
    params.update(directory_url='https://ca.example/dir', ca_bundle='/nonexistent/ca.pem')
    with pytest.raises(FleetcertError) as info:
        acme_client.validate_acme_params(params)
    assert info.value.msg.startswith('ca_bundle: /nonexistent/ca.pem')
    params.update(ca_bundle=None, request_timeout=0)
    with pytest.raises(FleetcertError) as info:
        acme_client.validate_acme_params(params)
    assert info.value.msg.startswith('request_timeout')
    params.update(request_timeout=30, account_uri='ftp://x')
    with pytest.raises(FleetcertError) as info:
        acme_client.validate_acme_params(params)
    assert info.value.msg.startswith('account_uri')
    params.update(account_uri=None)
    assert acme_client.validate_acme_params(params) == 'https://ca.example/dir'
