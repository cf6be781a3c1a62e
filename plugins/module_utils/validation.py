# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of user-facing inputs: domain names, challenge tokens, URLs, addresses, contacts.

Every function raises FleetcertError whose message starts with the option (and
list index) the bad value came from, so a user can find it in the playbook.
Standard library only: these run on every managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from ansible.module_utils.six import string_types
from ansible.module_utils.six.moves.urllib.parse import urlsplit

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError

# RFC 1035 "preferred name syntax" (LDH), which is what public CAs accept; no
# underscores: Let's Encrypt refuses them in certificate names.
_LABEL_RE = re.compile(r'^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z')
_MAX_NAME_LENGTH = 253

# RFC 8555 section 8.3: a token is base64url without padding and carries at
# least 128 bits of entropy (22 characters). The upper bound keeps the token a
# valid single file name (255 bytes on common filesystems).
_TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]+\Z')
_TOKEN_MIN_LENGTH = 22
_TOKEN_MAX_LENGTH = 255

# RFC 8555 section 7.3.4: the CA hands out the MAC key base64url-encoded; some
# CAs add padding, which is harmless.
_EAB_HMAC_KEY_RE = re.compile(r'^[A-Za-z0-9_-]+={0,2}\Z')

# dot-atom local part (RFC 5322 section 3.2.3); quoted local parts are refused
# because CAs refuse them too.
_LOCAL_PART_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def _where(option, index):
    return option if index is None else '%s[%d]' % (option, index)


def _normalize_name(name, where):
    """Return one DNS name in the form it has in a certificate, or raise."""
    if not isinstance(name, string_types):
        raise FleetcertError('%s: must be a string, got %s' % (where, type(name).__name__))
    original = name
    name = name.strip().lower()
    if not name:
        raise FleetcertError('%s: must not be empty' % where)
    if '*' in name:
        raise FleetcertError(
            "%s: %r is a wildcard; HTTP-01 cannot validate wildcards" % (where, original))
    candidate = name[1:-1] if name.startswith('[') and name.endswith(']') else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        raise FleetcertError(
            '%s: %r is an IP address; only DNS names are supported' % (where, original))
    try:
        # The stdlib codec (IDNA 2003) also maps the ideographic full stops to
        # '.', and rejects empty labels and labels over 63 octets.
        name = name.encode('idna').decode('ascii')
    except UnicodeError:
        raise FleetcertError(
            '%s: %r is not a valid DNS name: empty label, label longer than 63 characters '
            'or characters IDNA cannot encode' % (where, original))
    if name.endswith('.'):
        name = name[:-1]
    if not name:
        raise FleetcertError('%s: %r is not a valid DNS name' % (where, original))
    if len(name) > _MAX_NAME_LENGTH:
        raise FleetcertError(
            '%s: %r is longer than %d characters' % (where, original, _MAX_NAME_LENGTH))
    labels = name.split('.')
    for label in labels:
        if not _LABEL_RE.match(label):
            raise FleetcertError(
                '%s: %r is not a valid DNS name: label %r must be 1-63 characters of '
                'a-z, 0-9 and "-", not starting or ending with "-"' % (where, original, label))
        if label.startswith('xn--'):
            try:
                label.encode('ascii').decode('idna')
            except UnicodeError:
                raise FleetcertError(
                    '%s: %r is not a valid DNS name: %r is not valid punycode'
                    % (where, original, label))
    if labels[-1].isdigit():
        raise FleetcertError(
            '%s: %r is not a valid DNS name: the last label is all digits' % (where, original))
    return name


def normalize_names(names, option='names'):
    """Return DNS names lowercased, IDNA-encoded, without trailing dot, deduplicated in order."""
    if isinstance(names, string_types) or not isinstance(names, (list, tuple)):
        raise FleetcertError('%s: must be a list of DNS names' % option)
    if not names:
        raise FleetcertError('%s: at least one DNS name is required' % option)
    result = []
    for index, name in enumerate(names):
        normalized = _normalize_name(name, _where(option, index))
        if normalized not in result:
            result.append(normalized)
    return result


def validate_token(token, option='token'):
    """Return an ACME challenge token if it is safe to use as a file name, else raise."""
    if not isinstance(token, string_types):
        raise FleetcertError('%s: must be a string, got %s' % (option, type(token).__name__))
    if not _TOKEN_RE.match(token):
        raise FleetcertError(
            '%s: %r is not an ACME token: only base64url characters A-Z a-z 0-9 _ - '
            'are allowed' % (option, token))
    if not _TOKEN_MIN_LENGTH <= len(token) <= _TOKEN_MAX_LENGTH:
        raise FleetcertError(
            '%s: an ACME token has %d to %d characters, got %d'
            % (option, _TOKEN_MIN_LENGTH, _TOKEN_MAX_LENGTH, len(token)))
    return token


def validate_eab(kid, hmac_key, kid_option='eab_kid', key_option='eab_hmac_key'):
    """Check an External Account Binding pair; returns ``(kid, hmac_key)`` stripped.

    The MAC key is a secret: messages describe it, never quote it.
    """
    if kid is None and hmac_key is None:
        return None, None
    kid = kid.strip() if isinstance(kid, string_types) else ''
    if not kid or any(char.isspace() for char in kid):
        raise FleetcertError('%s: must be the non-empty key identifier the CA gave you, '
                             'without spaces' % kid_option)
    hmac_key = hmac_key.strip() if isinstance(hmac_key, string_types) else ''
    # A base64 text whose length leaves 1 character over cannot be decoded.
    if not _EAB_HMAC_KEY_RE.match(hmac_key) or len(hmac_key.rstrip('=')) % 4 == 1:
        raise FleetcertError('%s: not a base64url-encoded key (only A-Z a-z 0-9 _ - and '
                             'trailing = are allowed; the value is not shown)' % key_option)
    return kid, hmac_key


def validate_directory_url(url, allow_insecure=False, option='directory_url'):
    """Return an ACME directory URL: https with a host (http only when allowed)."""
    if not isinstance(url, string_types) or not url.strip():
        raise FleetcertError('%s: must be a non-empty URL' % option)
    url = url.strip()
    if any(char.isspace() for char in url):
        raise FleetcertError('%s: %r must not contain whitespace' % (option, url))
    parts = urlsplit(url)
    allowed = ('https', 'http') if allow_insecure else ('https',)
    if parts.scheme.lower() not in allowed:
        hint = '' if allow_insecure else ' (http is only accepted when insecure directories are allowed)'
        raise FleetcertError('%s: %r must be an https:// URL%s' % (option, url, hint))
    try:
        host = parts.hostname
        parts.port  # pylint: disable=pointless-statement
    except ValueError as exc:
        raise FleetcertError('%s: %r is not a valid URL (%s)' % (option, url, exc))
    if not host:
        raise FleetcertError('%s: %r has no host' % (option, url))
    return url


def parse_host_port(value, option):
    """Return ``(host, port)`` from ``host:port`` or ``[IPv6]:port``, else raise."""
    if not isinstance(value, string_types) or not value.strip():
        raise FleetcertError('%s: must be host:port, for example 127.0.0.1:443' % option)
    text = value.strip()
    host, sep, port = text.rpartition(':')
    if not sep or not host or any(char.isspace() or char in '/@' for char in text):
        raise FleetcertError('%s: %r is not host:port, for example 127.0.0.1:443' % (option, value))
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FleetcertError('%s: %r: %r is not an IPv6 address' % (option, value, host))
    elif ':' in host:
        raise FleetcertError('%s: %r: write an IPv6 address in brackets, [::1]:443' % (option, value))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise FleetcertError('%s: %r: the port must be a number from 1 to 65535' % (option, value))
    return host, int(port)


def normalize_contacts(emails, option='contact'):
    """Return ACME account contacts as ``mailto:`` URIs, deduplicated in order."""
    if emails is None:
        return []
    if isinstance(emails, string_types) or not isinstance(emails, (list, tuple)):
        raise FleetcertError('%s: must be a list of e-mail addresses' % option)
    result = []
    for index, email in enumerate(emails):
        where = _where(option, index)
        if not isinstance(email, string_types):
            raise FleetcertError('%s: must be a string, got %s' % (where, type(email).__name__))
        address = email.strip()
        if address.lower().startswith('mailto:'):
            address = address[len('mailto:'):]
        local, sep, domain = address.rpartition('@')
        if not sep or not local or not domain or not _LOCAL_PART_RE.match(local):
            raise FleetcertError(
                '%s: %r is not an e-mail address (expected user@example.com or '
                'mailto:user@example.com)' % (where, email))
        try:
            domain = _normalize_name(domain, where)
        except FleetcertError as exc:
            raise FleetcertError('%s (in e-mail address %r)' % (exc.msg, email))
        if '.' not in domain:
            raise FleetcertError(
                '%s: %r is not an e-mail address: the domain has no dot' % (where, email))
        uri = 'mailto:%s@%s' % (local, domain)
        if uri not in result:
            result.append(uri)
    return result
