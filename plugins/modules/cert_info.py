#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: cert_info
short_description: Inspect a certificate and decide whether it should be renewed
version_added: 0.1.0
description:
  - Reads a PEM certificate (a leaf, or a full chain whose first certificate is the leaf)
    and optionally its private key, and returns its names, validity, identifiers and
    whether it should be renewed now.
  - The renewal decision is the one every fleetcert.meteor module uses. In order, a
    certificate is renewed when its names differ from O(names), when it has expired,
    when the CA's ARI (RFC 9773) suggested window says so, or, without ARI, when less
    than O(remaining_fraction) of its lifetime is left.
  - Inside an ARI window the renewal instant is derived from the certificate's serial
    number, so every node of a fleet and every run agree on it.
  - A missing certificate file is not an error; the result says RV(exists=false) and
    RV(should_renew=true) with RV(renewal_reason=missing).
  - With O(served_at), also reads the certificate a TLS server presents there (for
    example nginx on C(127.0.0.1:443)), so a caller can tell a node whose disk is newer
    than what it serves.
  - Never changes anything.
author:
  - fleetcert maintainers (@fleetcert)
options:
  path:
    description:
      - Path of the PEM certificate (C(cert.pem) or C(fullchain.pem)) on the host.
      - Exactly one of O(path) and O(content) is required.
    type: path
  content:
    description:
      - The PEM certificate itself.
    type: str
  private_key_path:
    description:
      - Path of the PEM private key that should belong to the certificate; RV(key_matches)
        tells whether it does. A missing file gives RV(key_matches=false).
    type: path
  private_key_content:
    description:
      - The PEM private key itself. Never logged.
    type: str
  names:
    description:
      - DNS names the certificate must cover, exactly (any order). When they differ from
        the certificate's names, RV(should_renew=true) with RV(renewal_reason=names_changed).
      - Normalized like everywhere else (lowercase, IDNA, trailing dot removed).
    type: list
    elements: str
  remaining_fraction:
    description:
      - Without an ARI window, renew once less than this share of the certificate's
        lifetime (notBefore to notAfter) is left. Between 0 (exclusive) and 1.
      - The default, a third, renews a 90-day certificate 30 days before expiry and a
        6-day certificate 2 days before.
    type: float
    default: 0.3333
  directory_url:
    description:
      - ACME directory URL of the CA that issued the certificate. When given, the CA's
        ARI C(renewalInfo) is asked for its suggested renewal window, which then replaces
        the O(remaining_fraction) rule.
      - When the CA has no ARI, the O(remaining_fraction) rule applies. When asking fails
        (network, unknown certificate), the rule applies too and RV(ari_error) says why,
        with a warning.
      - Not used for self-signed certificates, which no CA knows.
    type: str
  ca_bundle:
    description:
      - PEM file of CA certificates to verify the ACME server's TLS certificate with.
    type: path
  allow_insecure_directory:
    description:
      - Accept an C(http) O(directory_url). Only for test CAs on a trusted network.
    type: bool
    default: false
  request_timeout:
    description:
      - Seconds to wait for each HTTP response of the ARI request, and for the TLS
        handshake with O(served_at).
    type: int
    default: 10
  served_at:
    description:
      - C(host:port) (C([IPv6]:port) for IPv6) of a TLS server that should present this
        certificate. Its serial is returned as RV(served_serial); when no certificate can
        be read there, RV(served_error) says why and the module does not fail.
      - The certificate is read, not verified, so a placeholder or an expired one is seen too.
    type: str
  server_name:
    description:
      - The SNI name sent to O(served_at). Defaults to the first of O(names); without
        O(names), no SNI is sent.
    type: str
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
requirements:
  - cryptography (Debian bookworm's python3-cryptography 38 is enough)
notes:
  - Runs on any host with the Python C(cryptography) library; the C(acme) library is not needed.
seealso:
  - module: fleetcert.meteor.cert_deploy
  - name: RFC 9773 (ACME Renewal Information)
    description: How the CA suggests when to renew.
    link: https://www.rfc-editor.org/rfc/rfc9773
'''

EXAMPLES = r'''
- name: Check the deployed certificate against the CA's renewal window
  fleetcert.meteor.cert_info:
    path: /etc/fleetcert/live/example.com/fullchain.pem
    private_key_path: /etc/fleetcert/live/example.com/privkey.pem
    names: [example.com, www.example.com]
    directory_url: https://acme-v02.api.letsencrypt.org/directory
  register: cert

- name: Renew when due
  ansible.builtin.debug:
    msg: "Renewing: {{ cert.renewal_reason }}"
  when: cert.should_renew

- name: See whether nginx serves the certificate on disk
  fleetcert.meteor.cert_info:
    path: /etc/fleetcert/certs/app/live/fullchain.pem
    names: [app.example.com]
    served_at: 127.0.0.1:443
  register: live

- name: Reload nginx when it still serves an older certificate
  ansible.builtin.command: nginx -s reload
  when: live.exists and live.served_serial not in [none, live.serial]
  changed_when: true

- name: Alert three days before expiry
  ansible.builtin.fail:
    msg: "{{ cert.names | join(', ') }} expires {{ cert.not_after }}"
  when: cert.exists and cert.days_left < 3
'''

RETURN = r'''
exists:
  description: Whether the certificate file exists (always true with O(content)).
  returned: always
  type: bool
  sample: true
should_renew:
  description: Whether the certificate should be renewed now.
  returned: always
  type: bool
  sample: false
renewal_reason:
  description:
    - Why RV(should_renew) is what it is. V(missing) (no file), V(names_changed),
      V(expired), V(ari_window) (the CA's window says now), V(lifetime) (less than
      O(remaining_fraction) left), or V(valid) (nothing to do).
  returned: always
  type: str
  sample: valid
renew_at:
  description: ISO 8601 UTC time at which renewal becomes (or became) due; null when the file is missing.
  returned: always
  type: str
  sample: '2026-03-02T07:41:12Z'
names:
  description: DNS names of the certificate's SAN (lowercase, in certificate order), then IP addresses.
  returned: always
  type: list
  elements: str
  sample: [example.com, www.example.com]
serial:
  description: Serial number in lowercase hexadecimal without colons.
  returned: when the certificate exists
  type: str
  sample: 4c1f0e5ab3a7f0d2
issuer:
  description: Issuer distinguished name (RFC 4514).
  returned: when the certificate exists
  type: str
  sample: CN=R11,O=Let's Encrypt,C=US
subject:
  description: Subject distinguished name (RFC 4514).
  returned: when the certificate exists
  type: str
  sample: CN=example.com
self_signed:
  description: Whether issuer and subject are the same (for example a placeholder certificate).
  returned: when the certificate exists
  type: bool
  sample: false
not_before:
  description: Start of validity, ISO 8601 UTC.
  returned: when the certificate exists
  type: str
  sample: '2026-01-01T00:00:00Z'
not_after:
  description: End of validity, ISO 8601 UTC.
  returned: when the certificate exists
  type: str
  sample: '2026-04-01T00:00:00Z'
seconds_left:
  description: Seconds until RV(not_after); negative once expired.
  returned: when the certificate exists
  type: int
  sample: 5184000
days_left:
  description: RV(seconds_left) in days, with two decimals.
  returned: when the certificate exists
  type: float
  sample: 60.0
lifetime_fraction_left:
  description: Share of the validity period still left, between 0 and 1.
  returned: when the certificate exists
  type: float
  sample: 0.6667
ari_cert_id:
  description: The RFC 9773 certificate identifier; null when the certificate has no Authority Key Identifier.
  returned: when the certificate exists
  type: str
  sample: aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE
key_matches:
  description: Whether the private key belongs to the certificate; null when no key was given.
  returned: always
  type: bool
  sample: true
chain_length:
  description: Number of certificates in the PEM data (1 for a bare leaf).
  returned: when the certificate exists
  type: int
  sample: 2
fingerprint_sha256:
  description: SHA-256 fingerprint of the leaf certificate (DER), lowercase hexadecimal without colons.
  returned: when the certificate exists
  type: str
  sample: 3b1f...e2
certificate:
  description: The leaf certificate in PEM.
  returned: when the certificate exists
  type: str
renewal_window:
  description: The CA's ARI suggested window that was used (ISO 8601 UTC), or null.
  returned: always
  type: dict
  contains:
    start:
      description: Start of the window.
      type: str
    end:
      description: End of the window.
      type: str
    explanation_url:
      description: The CA's explanation, when it gave one.
      type: str
    retry_after:
      description: Seconds after which the CA wants to be asked again, when it said.
      type: float
ari_error:
  description: Why the ARI window could not be fetched (then the lifetime rule was used), or null.
  returned: always
  type: str
resolved_path:
  description:
    - O(path) with every symlink resolved, for example the version directory a C(live)
      symlink points at. Null with O(content) or when the file is missing.
  returned: always
  type: str
  sample: /etc/fleetcert/certs/app/versions/20260305120000-0b3d8d8f5e1c7a22/fullchain.pem
served_serial:
  description:
    - Serial number (lowercase hexadecimal) of the certificate presented at O(served_at),
      or null when none was read (see RV(served_error)) or O(served_at) was not given.
  returned: always
  type: str
  sample: 0b3d8d8f5e1c7a2244
served_error:
  description: Why no certificate could be read at O(served_at), or null.
  returned: always
  type: str
  sample: 'no certificate could be read from 127.0.0.1:443 (SNI app.example.com): [Errno 111] Connection refused'
'''

import datetime
import errno
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native, to_text

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.acme_client import fetch_renewal_window
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.served import served_certificate
from ansible_collections.fleetcert.meteor.plugins.module_utils.renewal import (
    decide_renewal,
    validate_remaining_fraction,
)
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import (
    normalize_names,
    parse_host_port,
    validate_directory_url,
)


def iso(value):
    return value.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _read(path, option):
    """File content, or None when the file does not exist."""
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise FleetcertError('%s: cannot read %s: %s' % (option, path, exc.strerror or exc))


def _validate(params):
    fraction = validate_remaining_fraction(params['remaining_fraction'])
    names = None
    if params['names'] is not None:
        names = normalize_names(params['names'], 'names')
    directory_url = None
    if params['directory_url'] is not None:
        directory_url = validate_directory_url(
            params['directory_url'], allow_insecure=params['allow_insecure_directory'],
            option='directory_url')
        bundle = params['ca_bundle']
        if bundle is not None and not os.access(bundle, os.R_OK):
            raise FleetcertError('ca_bundle: %s does not exist or is not readable' % bundle)
    if params['content'] is not None and not params['content'].strip():
        raise FleetcertError('content: is empty')
    if params['request_timeout'] < 1:
        raise FleetcertError('request_timeout: must be at least 1 second, got %d'
                             % params['request_timeout'])
    served_at = None
    if params['served_at'] is not None:
        served_at = parse_host_port(params['served_at'], 'served_at')
    server_name = params['server_name']
    if server_name is not None:
        server_name = normalize_names([server_name], 'server_name')[0]
    elif names:
        server_name = names[0]
    return fraction, names, directory_url, served_at, server_name


def _key_matches(params, leaf):
    if params['private_key_content'] is not None:
        key = crypto.load_private_key(params['private_key_content'], 'private_key_content')
        return crypto.key_matches_certificate(key, leaf)
    path = params['private_key_path']
    if path is None:
        return None
    data = _read(path, 'private_key_path')
    if data is None:
        return False
    key = crypto.load_private_key(data, 'private_key_path: %s' % path)
    return crypto.key_matches_certificate(key, leaf)


def _ari_window(module, directory_url, leaf, self_signed):
    """(window or None, error text or None)."""
    if directory_url is None or self_signed:
        return None, None
    try:
        crypto.ari_cert_id(leaf)
    except FleetcertError as exc:
        return None, exc.msg
    params = module.params
    try:
        return fetch_renewal_window(directory_url, leaf, ca_bundle=params['ca_bundle'],
                                    timeout=params['request_timeout']), None
    except FleetcertError as exc:
        module.warn('ARI renewal information unavailable, using the lifetime rule: %s' % exc.msg)
        return None, exc.msg


def _served(served_at, server_name, timeout):
    """{'served_serial': ..., 'served_error': ...} for the TLS server at ``served_at``."""
    if served_at is None:
        return {'served_serial': None, 'served_error': None}
    try:
        served = served_certificate(served_at[0], served_at[1], server_name, timeout)
    except FleetcertError as exc:
        return {'served_serial': None, 'served_error': exc.msg}
    return {'served_serial': '%x' % served.serial_number, 'served_error': None}


def run(module, now):
    params = module.params
    fraction, names, directory_url, served_at, server_name = _validate(params)
    served = _served(served_at, server_name, params['request_timeout'])
    missing = {
        'changed': False, 'exists': False, 'should_renew': True, 'renewal_reason': 'missing',
        'renew_at': None, 'names': [], 'key_matches': None, 'renewal_window': None, 'ari_error': None,
        'resolved_path': None,
    }
    missing.update(served)
    resolved_path = None
    if params['path'] is not None:
        data = _read(params['path'], 'path')
        if data is None:
            return missing
        resolved_path = os.path.realpath(params['path'])
        option = 'path: %s' % params['path']
    else:
        data = params['content']
        option = 'content'
    chain = crypto.split_pem_chain(data, option)
    leaf = chain[0]

    not_before = crypto.not_valid_before(leaf)
    not_after = crypto.not_valid_after(leaf)
    lifetime = (not_after - not_before).total_seconds()
    seconds_left = int((not_after - now).total_seconds())
    self_signed = leaf.issuer == leaf.subject
    try:
        ari_cert_id = crypto.ari_cert_id(leaf)
    except FleetcertError:
        ari_cert_id = None
    key_matches = _key_matches(params, leaf)
    window, ari_error = _ari_window(module, directory_url, leaf, self_signed)
    decision = decide_renewal(leaf, now, wanted_names=names, remaining_fraction=fraction,
                              renewal_window=window)
    if window is not None:
        window = {
            'start': iso(window['start']),
            'end': iso(window['end']),
            'explanation_url': window.get('explanation_url'),
            'retry_after': window.get('retry_after'),
        }
    if lifetime > 0:
        fraction_left = min(1.0, max(0.0, (not_after - now).total_seconds() / lifetime))
    else:
        fraction_left = 0.0
    result = {
        'changed': False,
        'exists': True,
        'should_renew': decision.should_renew,
        'renewal_reason': decision.reason,
        'renew_at': iso(decision.renew_at),
        'names': crypto.certificate_names(leaf),
        'serial': '%x' % leaf.serial_number,
        'issuer': leaf.issuer.rfc4514_string(),
        'subject': leaf.subject.rfc4514_string(),
        'self_signed': self_signed,
        'not_before': iso(not_before),
        'not_after': iso(not_after),
        'seconds_left': seconds_left,
        'days_left': round(seconds_left / 86400.0, 2),
        'lifetime_fraction_left': round(fraction_left, 4),
        'ari_cert_id': ari_cert_id,
        'key_matches': key_matches,
        'chain_length': len(chain),
        'fingerprint_sha256': crypto.fingerprint_sha256(leaf),
        'certificate': to_text(crypto.certificate_to_pem(leaf)),
        'renewal_window': window,
        'ari_error': ari_error,
        'resolved_path': resolved_path,
    }
    result.update(served)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path'),
            content=dict(type='str'),
            private_key_path=dict(type='path', no_log=False),
            private_key_content=dict(type='str', no_log=True),
            names=dict(type='list', elements='str'),
            remaining_fraction=dict(type='float', default=0.3333),
            directory_url=dict(type='str'),
            ca_bundle=dict(type='path'),
            allow_insecure_directory=dict(type='bool', default=False),
            request_timeout=dict(type='int', default=10),
            served_at=dict(type='str'),
            server_name=dict(type='str'),
        ),
        mutually_exclusive=[('path', 'content'), ('private_key_path', 'private_key_content')],
        required_one_of=[('path', 'content')],
        supports_check_mode=True,
    )
    if not crypto.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'),
                         exception=crypto.CRYPTOGRAPHY_IMPORT_ERROR)
    try:
        result = run(module, datetime.datetime.now(datetime.timezone.utc))
    except FleetcertError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg=to_native(exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
