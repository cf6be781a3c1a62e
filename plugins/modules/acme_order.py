#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: acme_order
short_description: Order a certificate from an ACME CA with HTTP-01 validation
version_added: 0.1.0
description:
  - Creates an ACME order (RFC 8555) for O(names), and finalizes it into a certificate.
  - "Runs on the controller (C(delegate_to: localhost), C(run_once: true)): one order
    serves the whole fleet."
  - "Two ways to use it:"
  - "Two steps: O(state=pending) creates the order and returns the HTTP-01 challenges
    (token, key authorization, path) to place on every server, for example with
    M(fleetcert.meteor.acme_challenge); then O(state=valid) with O(order_uri) asks the
    CA to validate, waits, finalizes and downloads the certificate."
  - "One step: O(state=valid) without O(order_uri) does everything at once. Use it when
    every server already answers C(/.well-known/acme-challenge/<token>) statelessly with
    C(<token>.<account key thumbprint>) (the nginx role can do this), so nothing has to
    be placed per order."
  - A failed validation is reported with the CA's problem type and detail and the URL
    the CA fetched; it is not retried (failed validations count against rate limits).
  - The certificate key is generated fresh (O(key_type)) unless O(private_key_content) or
    O(private_key_path) gives one.
  - "About the private key in the result: the key is returned only with
    O(return_private_key=true), as plain text so that C(register) gets the real value
    (the same approach as M(community.crypto.openssl_privatekey_pipe)). Set
    C(no_log: true) on such a task: a module cannot hide its own result from the output
    and callback logs, only the task can. The module warns when the task does not set it,
    and never writes the key to syslog."
author:
  - fleetcert maintainers (@fleetcert)
extends_documentation_fragment:
  - fleetcert.meteor.acme
attributes:
  check_mode:
    support: full
    description: Validates the input and reads the keys; creates no order and contacts no CA.
  diff_mode:
    support: none
    description: Orders are created, not edited; there is nothing to compare.
options:
  state:
    description:
      - V(pending) creates an order and returns its challenges.
      - V(valid) gets a certificate; see the description for the one-step and two-step use.
    type: str
    choices: [pending, valid]
    default: valid
  names:
    description:
      - DNS names for the certificate; the first one is also the subject CN.
      - Normalized (lower case, IDNA, trailing dot removed, duplicates dropped).
        Wildcards and IP addresses are refused (HTTP-01 cannot validate them).
      - Required unless O(order_uri) is given; with O(order_uri) it must match the order.
    type: list
    elements: str
  order_uri:
    description:
      - URL of an order created by O(state=pending); only with O(state=valid).
    type: str
  profile:
    description:
      - Certificate profile to ask the CA for (draft-aaron-acme-profiles), for example
        V(classic), V(tlsserver) or V(shortlived) at Let's Encrypt. Must be one the
        directory lists. Unset means the CA's default.
    type: str
  replaces:
    description:
      - ARI certificate identifier (RFC 9773) of the certificate this order renews, as
        returned by M(fleetcert.meteor.cert_info) or RV(ari_cert_id). Renewals that say
        what they replace are exempt from Let's Encrypt's rate limits.
      - When the CA refuses it (the certificate was already replaced, or the CA cannot
        match the identifier), the order is sent again once without it, with a warning;
        RV(replaces_accepted) and RV(replaces_refused) tell what happened.
    type: str
  key_type:
    description:
      - Type of the freshly generated certificate key.
    type: str
    choices: [ec256, ec384, rsa2048, rsa3072, rsa4096]
    default: ec256
  private_key_content:
    description:
      - PEM private key to certify instead of generating one. Never logged.
      - Mutually exclusive with O(private_key_path).
    type: str
  private_key_path:
    description:
      - Path of a PEM private key (on the machine running the module) to certify instead
        of generating one.
    type: path
  preferred_chain:
    description:
      - Common name of the root (the issuer of the topmost certificate of the chain)
        to prefer when the CA offers alternate chains. If no chain matches, the CA's
        default chain is used.
    type: str
  dest_dir:
    description:
      - Also write C(privkey.pem) (mode 0600), C(cert.pem), C(chain.pem) and
        C(fullchain.pem) (mode 0644) into this directory (created with mode 0700 if
        missing), each atomically.
    type: path
  return_private_key:
    description:
      - Return the certificate's private key as RV(private_key).
      - When a key is generated, O(return_private_key=true) or O(dest_dir) is required,
        or the key would be lost.
    type: bool
    default: false
  order_timeout:
    description:
      - Seconds to wait for validation and issuance together.
    type: int
    default: 120
notes:
  - Polling starts after 50 ms and backs off to 2 s; a C(Retry-After) from the CA is
    always honoured.
seealso:
  - module: fleetcert.meteor.acme_account
'''

EXAMPLES = r'''
- name: One-step order (every server answers challenges statelessly)
  fleetcert.meteor.acme_order:
    directory_url: https://acme-v02.api.letsencrypt.org/directory
    account_key_content: "{{ vault_acme_account_key }}"
    account_uri: "{{ acme_account.account_uri }}"
    names: [app.example.com, www.app.example.com]
    return_private_key: true
  delegate_to: localhost
  run_once: true
  no_log: true
  register: cert

- name: Two steps, part 1 - create the order
  fleetcert.meteor.acme_order:
    directory_url: https://acme-v02.api.letsencrypt.org/directory
    account_key_content: "{{ vault_acme_account_key }}"
    names: [app.example.com]
    state: pending
  delegate_to: localhost
  run_once: true
  register: order

- name: Two steps, part 2 - place the challenges on every server
  fleetcert.meteor.acme_challenge:
    webroot: /var/lib/fleetcert/acme
    challenges: "{{ order.challenges }}"

- name: Two steps, part 3 - validate, finalize, write the files on the controller
  fleetcert.meteor.acme_order:
    directory_url: https://acme-v02.api.letsencrypt.org/directory
    account_key_content: "{{ vault_acme_account_key }}"
    order_uri: "{{ order.order_uri }}"
    dest_dir: /var/lib/fleetcert/app.example.com
    replaces: "{{ current.ari_cert_id | default(omit) }}"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
order_uri:
  description: URL of the order.
  returned: success, not in check mode
  type: str
  sample: https://acme-v02.api.letsencrypt.org/acme/order/123/456
status:
  description: Status of the order (V(pending) after O(state=pending), V(valid) after
    O(state=valid)).
  returned: success, not in check mode
  type: str
names:
  description: The normalized names of the order.
  returned: success
  type: list
  elements: str
thumbprint:
  description: RFC 7638 thumbprint of the account key (suffix of every key authorization).
  returned: success, not in check mode
  type: str
challenges:
  description:
    - The HTTP-01 challenge of each name. Nothing here is secret.
    - Names whose authorization the CA already holds as valid come with
      RV(challenges[].status=valid) and need no answer.
  returned: O(state=pending)
  type: list
  elements: dict
  contains:
    name:
      description: The DNS name.
      type: str
    token:
      description: The challenge token (base64url).
      type: str
    key_authorization:
      description: The content to serve, C(<token>.<thumbprint>).
      type: str
    path:
      description: The URL path the CA fetches, C(/.well-known/acme-challenge/<token>).
      type: str
    url:
      description: URL of the challenge at the CA.
      type: str
    status:
      description: Status of the name's authorization (V(pending) or V(valid)).
      type: str
replaces_accepted:
  description:
    - Whether the order replaces a certificate (RFC 9773). False when O(replaces) was not
      given, or when the CA refused it and the order was sent again without it.
    - With O(order_uri), taken from the CA's order object.
  returned: success, not in check mode
  type: bool
replaces_refused:
  description:
    - The CA's problem when it refused O(replaces) and the order was placed without it
      (keys C(type), C(detail), C(status), C(subproblems), C(url), C(retry_after)).
  returned: when the CA refused O(replaces)
  type: dict
  sample:
    type: urn:ietf:params:acme:error:alreadyReplaced
    detail: certificate has already been replaced
    status: 409
    subproblems: []
    url: null
    retry_after: null
replaces:
  description: The ARI certificate identifier the order replaces, as the CA reports it.
  returned: success, when the CA reports one
  type: str
profile:
  description: The profile of the order, as the CA reports it.
  returned: success, when the CA reports one
  type: str
certificate:
  description: The certificate (PEM).
  returned: O(state=valid), not in check mode
  type: str
chain:
  description: The intermediate certificates (PEM), without the leaf.
  returned: O(state=valid), not in check mode
  type: str
fullchain:
  description: Certificate followed by the intermediates (PEM), what nginx wants.
  returned: O(state=valid), not in check mode
  type: str
private_key:
  description:
    - "The certificate's private key (PEM). Set C(no_log: true) on the task; see the description."
  returned: O(state=valid) and O(return_private_key=true), not in check mode
  type: str
serial:
  description: Serial number of the certificate, lower-case hex.
  returned: O(state=valid), not in check mode
  type: str
  sample: 4f3a9d0c2b7e11aa
not_before:
  description: Start of validity (ISO 8601, UTC).
  returned: O(state=valid), not in check mode
  type: str
  sample: '2026-01-01T00:00:00+00:00'
not_after:
  description: End of validity (ISO 8601, UTC).
  returned: O(state=valid), not in check mode
  type: str
  sample: '2026-03-31T23:59:59+00:00'
ari_cert_id:
  description: ARI certificate identifier (RFC 9773) of the new certificate, for
    O(replaces) at its renewal.
  returned: O(state=valid), not in check mode
  type: str
files:
  description: Files written under O(dest_dir) and whether each changed.
  returned: O(dest_dir) is set, not in check mode
  type: dict
  sample: {privkey.pem: true, cert.pem: true, chain.pem: true, fullchain.pem: true}
http_requests:
  description: Number of HTTP requests sent to the CA (retries included).
  returned: success, not in check mode
  type: int
'''

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetcert.meteor.plugins.module_utils import acme_client
from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.files import (
    atomic_write,
    ensure_directory,
)
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import (
    normalize_names,
)

# RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial)
_ARI_CERT_ID_RE = re.compile(r'^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$')
_PROFILE_RE = re.compile(r'^[A-Za-z0-9._-]{1,64}$')


def _validate(module):
    """Check every input before any network call; returns the normalized names."""
    params = module.params
    acme_client.validate_acme_params(params)
    names = params['names']
    if params['state'] == 'pending' and params['order_uri']:
        raise FleetcertError('order_uri: only with state=valid; state=pending creates a new order')
    if names is not None or not params['order_uri']:
        if not names:
            raise FleetcertError('names: at least one DNS name is required')
        names = normalize_names(names, option='names')
    uri = params['order_uri']
    if uri is not None and not uri.lower().startswith(('https://', 'http://')):
        raise FleetcertError('order_uri: %r is not an http(s) URL' % uri)
    if params['replaces'] is not None and not _ARI_CERT_ID_RE.match(params['replaces']):
        raise FleetcertError('replaces: %r is not an ARI certificate identifier '
                             '(<base64url key id>.<base64url serial>)' % params['replaces'])
    if params['profile'] is not None and not _PROFILE_RE.match(params['profile']):
        raise FleetcertError('profile: %r is not a profile name' % params['profile'])
    if params['order_timeout'] < 1:
        raise FleetcertError('order_timeout: must be at least 1 second, got %d'
                             % params['order_timeout'])
    if params['state'] == 'valid':
        given_key = params['private_key_content'] or params['private_key_path']
        if not given_key and not params['return_private_key'] and not params['dest_dir']:
            raise FleetcertError(
                'return_private_key: a new private key is generated, so set '
                'return_private_key: true or dest_dir, or give private_key_content or '
                'private_key_path; otherwise the key would be lost')
    return names


def _certificate_key(params):
    """(key, pem): the given key, or a fresh one of key_type."""
    if params['private_key_content']:
        pem = params['private_key_content'].encode('utf-8')
        return crypto.load_private_key(pem, 'private_key_content'), pem
    path = params['private_key_path']
    if path:
        try:
            with open(path, 'rb') as handle:
                pem = handle.read()
        except (IOError, OSError) as exc:
            raise FleetcertError('private_key_path: cannot read %s: %s'
                                 % (path, exc.strerror or exc))
        return crypto.load_private_key(pem, 'private_key_path'), pem
    key = crypto.generate_private_key(params['key_type'], option='key_type')
    return key, crypto.private_key_to_pem(key)


def _order_names(order):
    return [identifier.value for identifier in order.body.identifiers or ()]


def _write_files(dest_dir, pems):
    ensure_directory(dest_dir, 0o700)
    changed = {}
    for name, data in pems:
        mode = 0o600 if name == 'privkey.pem' else 0o644
        changed[name] = atomic_write(os.path.join(dest_dir, name), data, mode)
    return changed


def run(module):
    params = module.params
    # AnsibleModule sets no_log from the task's no_log (before we change it below).
    task_no_log = module.no_log
    names = _validate(module)
    acme_client.require_acme()
    account_key = acme_client.load_account_key(params)
    key = key_pem = None
    if params['state'] == 'valid':
        key, key_pem = _certificate_key(params)
    result = dict(changed=True, names=names or [])
    if module.check_mode:
        return result

    client = acme_client.client_from_params(params, account_key)
    if params['order_uri']:
        order = client.get_order(params['order_uri'])
        order_names = _order_names(order)
        if names is not None and sorted(names) != sorted(order_names):
            raise FleetcertError('names: %s do not match the names of order %s: %s'
                                 % (', '.join(names), order.uri, ', '.join(order_names)))
        names = order_names
        replaces_accepted = None
    else:
        order, refusal = client.new_order(names, profile=params['profile'],
                                          replaces=params['replaces'])
        replaces_accepted = bool(params['replaces']) and refusal is None
        if refusal is not None:
            result['replaces_refused'] = refusal
            module.warn('the CA refused replaces=%s (%s: %s); the order was placed without it'
                        % (params['replaces'], refusal['type'], refusal['detail']))
    result.update(order_uri=order.uri, names=names, thumbprint=client.thumbprint)
    if replaces_accepted is None:
        # An existing order: the CA's order object says what it replaces.
        replaces_accepted = bool(order.body.replaces)
    result['replaces_accepted'] = replaces_accepted
    if order.body.replaces:
        result['replaces'] = order.body.replaces
    if order.body.profile:
        result['profile'] = order.body.profile

    if params['state'] == 'pending':
        result.update(status=order.body.status.name,
                      challenges=client.order_challenges(order),
                      http_requests=client.request_count)
        return result

    deadline = time.monotonic() + params['order_timeout']
    chain = client.complete_order(order, crypto.build_csr(key, names), deadline,
                                  preferred_chain=params['preferred_chain'])
    leaf = chain[0]
    if not crypto.key_matches_certificate(key, leaf):
        raise FleetcertError('the CA issued a certificate for another key than the one of '
                             'this order (order %s was finalized before?)' % order.uri,
                             order_uri=order.uri)
    certificate = crypto.certificate_to_pem(leaf).decode('ascii')
    intermediates = ''.join(crypto.certificate_to_pem(c).decode('ascii') for c in chain[1:])
    result.update(
        status='valid',
        certificate=certificate,
        chain=intermediates,
        fullchain=certificate + intermediates,
        serial='%x' % leaf.serial_number,
        not_before=leaf.not_valid_before_utc.isoformat(),
        not_after=leaf.not_valid_after_utc.isoformat(),
        ari_cert_id=crypto.ari_cert_id(leaf),
        http_requests=client.request_count,
    )
    if params['dest_dir']:
        result['files'] = _write_files(params['dest_dir'], [
            ('privkey.pem', key_pem),
            ('cert.pem', certificate.encode('ascii')),
            ('chain.pem', intermediates.encode('ascii')),
            ('fullchain.pem', (certificate + intermediates).encode('ascii')),
        ])
    if params['return_private_key']:
        result['private_key'] = key_pem.decode('ascii')
        # As community.crypto's openssl_privatekey_pipe does: the key must reach
        # the registered result, so it must not be in no_log_values (exit_json
        # would replace it with a placeholder); module.no_log keeps the
        # invocation out of syslog. Hiding the result from the display is the
        # task's no_log: a module cannot flag its own result (ansible-core
        # strips _ansible_no_log from module returns).
        module.no_log_values.discard(params['private_key_content'])
        module.no_log = True
        if not task_no_log:
            module.warn('return_private_key is true but the task does not set no_log: true; '
                        'the private key will appear in verbose output and callback logs')
    return result


def main():
    argument_spec = acme_client.acme_argument_spec()
    argument_spec.update(
        state=dict(type='str', default='valid', choices=['pending', 'valid']),
        names=dict(type='list', elements='str'),
        order_uri=dict(type='str'),
        profile=dict(type='str'),
        replaces=dict(type='str'),
        key_type=dict(type='str', default='ec256', choices=list(crypto.KEY_TYPES)),
        private_key_content=dict(type='str', no_log=True),
        private_key_path=dict(type='path'),
        preferred_chain=dict(type='str'),
        dest_dir=dict(type='path'),
        return_private_key=dict(type='bool', default=False),
        order_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=acme_client.ACME_MUTUALLY_EXCLUSIVE + [
            ('private_key_content', 'private_key_path'),
        ],
        required_one_of=[('account_key_content', 'account_key_path')],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except FleetcertError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
