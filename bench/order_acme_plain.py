# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One certificate with certbot's ``acme`` library as its README shows it.

The baseline every ACME-on-Python tool starts from: ``ClientV2`` with its
defaults (one-second poll sleeps, ``poll_and_finalize``), an EC P-256 account
key, the HTTP-01 file written to the webroot. Nothing of fleetcert is used.

  order_acme_plain.py register --state FILE --directory URL --ca PEM
  order_acme_plain.py order --state FILE --directory URL --ca PEM --name NAME
                            --webroot DIR --out DIR
"""

import argparse
import json
import os

import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

USER_AGENT = 'fleetcert-bench-acme-plain'


def _net(key, ca, account=None):
    return client.ClientNetwork(jose.JWKEC(key=key), account=account, alg=jose.ES256,
                                verify_ssl=ca, user_agent=USER_AGENT)


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'wb') as handle:
        handle.write(data)


def register(args):
    key = ec.generate_private_key(ec.SECP256R1())
    net = _net(key, args.ca)
    acme = client.ClientV2(client.ClientV2.get_directory(args.directory, net), net)
    regr = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    _write(args.state + '.key', _pem(key), 0o600)
    _write(args.state, json.dumps({'key': args.state + '.key', 'uri': regr.uri}).encode(), 0o600)
    return {'account_uri': regr.uri}


def order(args):
    with open(args.state) as handle:
        state = json.load(handle)
    with open(state['key'], 'rb') as handle:
        account_key = serialization.load_pem_private_key(handle.read(), password=None)
    regr = messages.RegistrationResource(body=messages.Registration(), uri=state['uri'])
    net = _net(account_key, args.ca, account=regr)
    acme = client.ClientV2(client.ClientV2.get_directory(args.directory, net), net)

    key_pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    orderr = acme.new_order(crypto_util.make_csr(key_pem, [args.name]))
    challenge_dir = os.path.join(args.webroot, '.well-known', 'acme-challenge')
    os.makedirs(challenge_dir, exist_ok=True)
    for authzr in orderr.authorizations:
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, challenges.HTTP01):
                response, validation = challb.response_and_validation(net.key)
                _write(os.path.join(challenge_dir, challb.chall.encode('token')),
                       validation.encode(), 0o644)
                acme.answer_challenge(challb, response)
    orderr = acme.poll_and_finalize(orderr)
    os.makedirs(args.out, mode=0o700, exist_ok=True)
    _write(os.path.join(args.out, 'privkey.pem'), key_pem, 0o600)
    _write(os.path.join(args.out, 'fullchain.pem'), orderr.fullchain_pem.encode(), 0o644)
    return {'order_uri': orderr.uri}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('action', choices=['register', 'order'])
    parser.add_argument('--state', required=True)
    parser.add_argument('--directory', required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--name')
    parser.add_argument('--webroot')
    parser.add_argument('--out')
    args = parser.parse_args()
    print(json.dumps(register(args) if args.action == 'register' else order(args)))


if __name__ == '__main__':
    main()
