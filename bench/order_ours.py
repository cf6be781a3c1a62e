# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One certificate through fleetcert's own ordering path, in-process.

What ``fleetcert.meteor.acme_order`` (state=valid, no order_uri) does, with the
HTTP-01 file placed in the webroot by ``fleetcert.meteor.acme_challenge``'s
logic between creating the order and answering it, as a webroot user of the
collection gets it. No AnsibleModule plumbing: it measures the protocol path.
The module code is imported, not copied, so a change there is measured here.

Run by bench/order_bench.py with the project venv's python:

  order_ours.py register --state FILE --directory URL --ca PEM
  order_ours.py order --state FILE --directory URL --ca PEM --name NAME
                      --webroot DIR --out DIR

Prints one JSON line: the requests the client itself counted (a cross-check of
the count taken at the CA).
"""

import time

_START = time.monotonic()

# pylint: disable=wrong-import-position
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's collection symlink (scripts/setup.sh makes it).
sys.path.insert(0, os.path.join(_ROOT, '.cache', 'collections'))

from ansible_collections.fleetcert.meteor.plugins.module_utils import acme_client  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.module_utils.files import atomic_write  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import normalize_names  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.modules import acme_challenge  # noqa: E402
from ansible_collections.fleetcert.meteor.plugins.modules import acme_order  # noqa: E402

_IMPORTED = time.monotonic()


class _Task(object):
    """What acme_challenge's helpers read from an AnsibleModule."""

    check_mode = False
    _diff = False


def _params(args, key_path, account_uri=None):
    # The same dict an AnsibleModule would hand to the shared ACME helpers.
    return dict(directory_url=args.directory, account_key_content=None,
                account_key_path=key_path, account_uri=account_uri, ca_bundle=args.ca,
                allow_insecure_directory=False,
                request_timeout=acme_client.DEFAULT_REQUEST_TIMEOUT)


def register(args):
    key_path = os.path.abspath(args.state) + '.key'
    key = crypto.generate_private_key('ec256')
    atomic_write(key_path, crypto.private_key_to_pem(key), 0o600)
    client = acme_client.client_from_params(_params(args, key_path), key)
    info = client.register_or_find_account([], agree_tos=True)
    atomic_write(args.state, json.dumps({'key': key_path, 'uri': info['uri']}).encode(), 0o600)
    return {'account_uri': info['uri'], 'thumbprint': client.thumbprint,
            'requests': client.request_count}


def order(args):
    with open(args.state) as handle:
        state = json.load(handle)
    params = _params(args, state['key'], state['uri'])
    acme_client.validate_acme_params(params)
    names = normalize_names([args.name], option='names')
    account_key = acme_client.load_account_key(params)
    key = crypto.generate_private_key('ec256')
    key_pem = crypto.private_key_to_pem(key)

    phases = {'imports': _IMPORTED - _START}
    mark = time.monotonic()
    phases['keys'] = mark - _IMPORTED
    client = acme_client.client_from_params(params, account_key)
    new, dummy = client.new_order(names)
    challenges = acme_challenge.validate_challenges(client.order_challenges(new),
                                                    need_key_authorization=True)
    challenge_dir = os.path.join(args.webroot, acme_challenge.CHALLENGE_SUBDIR)
    acme_challenge._present(_Task(), challenge_dir, challenges)  # pylint: disable=protected-access
    phases['order'], mark = time.monotonic() - mark, time.monotonic()

    deadline = time.monotonic() + 120
    chain = client.complete_order(new, crypto.build_csr(key, names), deadline)
    phases['complete'], mark = time.monotonic() - mark, time.monotonic()
    if not crypto.key_matches_certificate(key, chain[0]):
        raise SystemExit('the CA issued a certificate for another key')
    certificate = crypto.certificate_to_pem(chain[0])
    intermediates = b''.join(crypto.certificate_to_pem(c) for c in chain[1:])
    acme_order._write_files(args.out, [  # pylint: disable=protected-access
        ('privkey.pem', key_pem),
        ('cert.pem', certificate),
        ('chain.pem', intermediates),
        ('fullchain.pem', certificate + intermediates),
    ])
    phases['files'] = time.monotonic() - mark
    return {'order_uri': new.uri, 'requests': client.request_count, 'phases': phases}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('action', choices=['register', 'order'])
    parser.add_argument('--state', required=True, help='JSON file with the account key path and URI')
    parser.add_argument('--directory', required=True)
    parser.add_argument('--ca', required=True, help="PEM bundle that signs the CA's HTTPS listener")
    parser.add_argument('--name')
    parser.add_argument('--webroot')
    parser.add_argument('--out')
    args = parser.parse_args()
    try:
        result = register(args) if args.action == 'register' else order(args)
    except FleetcertError as exc:
        raise SystemExit('order_ours: %s %s' % (exc.msg, json.dumps(exc.details, default=str)))
    print(json.dumps(result))


if __name__ == '__main__':
    main()
