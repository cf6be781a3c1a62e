# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetcert.meteor.acme_account against real Pebble, through ansible-playbook.

What the module reports is cross-checked at the CA (an in-process lookup by
key) and in Pebble's request log.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import socket
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ansible_collections.fleetcert.meteor.plugins.module_utils import acme_client, crypto

PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks', 'acme_account.yml')
TASK = 'Run acme_account'


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def rfc7638_thumbprint(key):
    """Written out from RFC 7638 section 3 (not crypto.jwk_thumbprint): the check must be independent."""
    public = key.public_key().public_numbers()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        members = {'crv': 'P-%d' % key.curve.key_size, 'kty': 'EC',
                   'x': b64url(public.x.to_bytes(size, 'big')),
                   'y': b64url(public.y.to_bytes(size, 'big'))}
    else:
        members = {'e': b64url(public.e.to_bytes((public.e.bit_length() + 7) // 8, 'big')),
                   'kty': 'RSA',
                   'n': b64url(public.n.to_bytes((public.n.bit_length() + 7) // 8, 'big'))}
    canonical = json.dumps(members, sort_keys=True, separators=(',', ':')).encode()
    return b64url(hashlib.sha256(canonical).digest())


@pytest.fixture
def account(run_playbook, make_inventory, pebble):
    """account(check_mode=False, diff=False, verbosity=0, **vars) -> (PlaybookResult, task result)."""
    def run(check_mode=False, diff=False, verbosity=0, directory_url=None, ca_bundle=None,
            **variables):
        extra = {'acme_directory_url': directory_url or pebble.directory_url,
                 'acme_ca_bundle': ca_bundle or pebble.ca_path,
                 'account_check_mode': check_mode, 'account_diff': diff}
        extra.update(variables)
        result = run_playbook(PLAYBOOK, inventory=make_inventory(), extra_vars=extra,
                              verbosity=verbosity)
        return result, result.result(TASK, 'localhost')

    return run


def lookup(pebble, key_path):
    """The account of this key as the CA knows it (None if none)."""
    with open(str(key_path), 'rb') as handle:
        key = crypto.load_private_key(handle.read(), 'key')
    return acme_client.AcmeClient(pebble.directory_url, key, ca_bundle=pebble.ca_path).find_account()


def test_check_mode_with_a_missing_key_changes_nothing(account, pebble, tmp_path):
    key_path = tmp_path / 'account.key'
    window = pebble.log_window()
    result, res = account(check_mode=True, diff=True, acme_account_key_path=str(key_path),
                          account_create_key=True)
    result.assert_ok()
    assert res['changed'] is True
    assert res['created'] is True and res['key_generated'] is True
    assert res['account_uri'] is None
    assert res['diff'] == {'before': {'exists': False},
                           'after': {'exists': True, 'contacts': []}}
    assert not key_path.exists()
    assert window.text() == ''


def test_create_with_generated_key_then_idempotent(account, pebble, tmp_path):
    key_path = tmp_path / 'account.key'
    window = pebble.log_window()
    result, res = account(acme_account_key_path=str(key_path), account_create_key=True,
                          account_contact=['Ops@Example.COM'])
    result.assert_ok()
    assert res['changed'] is True and res['created'] is True and res['key_generated'] is True
    assert res['status'] == 'valid'
    assert res['contacts'] == ['mailto:Ops@example.com']
    assert res['account_uri'].startswith('https://localhost:%d/my-account/' % pebble.port_base)
    assert stat.S_IMODE(os.stat(str(key_path)).st_mode) == 0o600
    key = crypto.load_private_key(key_path.read_bytes(), 'key')
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == 'secp256r1'
    assert res['thumbprint'] == rfc7638_thumbprint(key)
    # One account created (POSTs may be resent after Pebble's random badNonce).
    assert window.text().count('accounts in memory') == 1

    at_ca = lookup(pebble, key_path)
    assert at_ca['uri'] == res['account_uri']
    assert at_ca['contacts'] == ['mailto:Ops@example.com']

    key_before = key_path.read_bytes()
    again, res2 = account(acme_account_key_path=str(key_path), account_create_key=True,
                          account_contact=['mailto:Ops@EXAMPLE.com'])
    again.assert_ok()
    assert res2['changed'] is False
    assert res2['created'] is False and res2['updated'] is False and res2['key_generated'] is False
    assert res2['account_uri'] == res['account_uri']
    assert res2['thumbprint'] == res['thumbprint']
    assert key_path.read_bytes() == key_before


def test_contacts_check_mode_then_update(account, pebble, tmp_path):
    key_path = tmp_path / 'account.key'
    account(acme_account_key_path=str(key_path), account_create_key=True,
            account_contact=['a@example.com'])[0].assert_ok()

    result, res = account(check_mode=True, diff=True, acme_account_key_path=str(key_path),
                          account_contact=['b@example.com', 'c@example.com'])
    result.assert_ok()
    assert res['changed'] is True and res['updated'] is True and res['created'] is False
    assert res['diff'] == {
        'before': {'exists': True, 'contacts': ['mailto:a@example.com']},
        'after': {'exists': True, 'contacts': ['mailto:b@example.com', 'mailto:c@example.com']},
    }
    assert lookup(pebble, key_path)['contacts'] == ['mailto:a@example.com']

    result, res = account(acme_account_key_path=str(key_path),
                          account_contact=['b@example.com', 'c@example.com'])
    result.assert_ok()
    assert res['changed'] is True and res['updated'] is True
    assert sorted(lookup(pebble, key_path)['contacts']) == ['mailto:b@example.com',
                                                            'mailto:c@example.com']

    result, res = account(acme_account_key_path=str(key_path),
                          account_contact=['c@example.com', 'b@example.com'])
    result.assert_ok()
    assert res['changed'] is False

    result, res = account(acme_account_key_path=str(key_path), account_contact=[])
    result.assert_ok()
    assert res['changed'] is True and res['updated'] is True
    assert lookup(pebble, key_path)['contacts'] == []


def test_key_content_rsa_is_never_shown(run_playbook, make_inventory, pebble):
    key = crypto.generate_private_key('rsa2048')
    pem = crypto.private_key_to_pem(key).decode('ascii')
    # -vvv: module arguments and connection details are printed too.
    result = run_playbook(PLAYBOOK, inventory=make_inventory(), verbosity=3, extra_vars={
        'acme_directory_url': pebble.directory_url, 'acme_ca_bundle': pebble.ca_path,
        'acme_account_key_content': pem})
    assert result.rc == 0, result.summary()
    # The json callback's document follows the -vvv chatter.
    report = json.loads(result.stdout[result.stdout.index('\n{\n') + 1:])
    res = report['plays'][0]['tasks'][0]['hosts']['localhost']
    assert res['created'] is True
    assert res['thumbprint'] == rfc7638_thumbprint(key)
    assert res['invocation']['module_args']['account_key_content'] == \
        'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
    for line in pem.splitlines()[1:-1]:
        assert line not in result.stdout and line not in result.stderr


def test_rsa_key_generation(account, tmp_path):
    key_path = tmp_path / 'rsa.key'
    result, res = account(acme_account_key_path=str(key_path), account_create_key=True,
                          account_key_type='rsa3072')
    result.assert_ok()
    key = crypto.load_private_key(key_path.read_bytes(), 'key')
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert res['thumbprint'] == rfc7638_thumbprint(key)


def test_allow_creation_false_does_not_create(account, pebble, tmp_path):
    key_path = tmp_path / 'account.key'
    key_path.write_bytes(crypto.private_key_to_pem(crypto.generate_private_key('ec384')))
    result, res = account(acme_account_key_path=str(key_path), account_allow_creation=False)
    assert result.rc != 0
    assert res['failed'] is True
    assert 'allow_creation is false' in res['msg']
    assert lookup(pebble, key_path) is None


@pytest.mark.parametrize('variables, expected', [
    ({'account_contact': ['not-an-address']}, "contact[0]: 'not-an-address' is not an e-mail"),
    ({'account_contact': ['ok@example.com', 'x@*.example.com']}, 'contact[1]:'),
    ({'acme_account_key_path': '/nonexistent/account.key'},
     'account_key_path: /nonexistent/account.key does not exist (set create_key: true'),
    ({'account_key_type': 'dsa1024', 'account_create_key': True},
     'value of key_type must be one of'),
    ({'acme_account_key_content': 'not a key'}, 'account_key_content: not a readable PEM'),
    ({'acme_account_key_content': '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
      'account_create_key': True}, 'create_key: requires account_key_path'),
], ids=['contact', 'contact-wildcard', 'missing-key', 'key-type', 'key-content', 'create-key'])
def test_bad_input_fails_before_any_request(account, pebble, tmp_path, variables, expected):
    variables = dict(variables)
    if 'acme_account_key_content' not in variables:
        variables.setdefault('acme_account_key_path', str(tmp_path / 'account.key'))
        if 'account_create_key' not in variables and 'account_contact' in variables:
            variables['account_create_key'] = True
    window = pebble.log_window()
    result, res = account(**variables)
    assert result.rc != 0
    assert res['failed'] is True
    assert expected in res['msg'], res['msg']
    assert window.text() == ''
    assert not (tmp_path / 'account.key').exists()


def test_http_directory_is_refused(account, tmp_path):
    result, res = account(directory_url='http://localhost:1/dir',
                          acme_account_key_path=str(tmp_path / 'k'), account_create_key=True)
    assert result.rc != 0
    assert res['msg'].startswith('directory_url')
    assert not (tmp_path / 'k').exists()


def _closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_unreachable_ca_names_the_url(account, tmp_path):
    url = 'https://127.0.0.1:%d/dir' % _closed_port()
    result, res = account(directory_url=url, acme_account_key_path=str(tmp_path / 'k'),
                          account_create_key=True)
    assert result.rc != 0
    assert res['msg'].startswith('cannot reach the ACME server at %s after %d attempts'
                                 % (url, len(acme_client.CONNECT_BACKOFF) + 1))
    assert res['url'] == url


def test_untrusted_tls_certificate_is_reported(account, pebble, tmp_path):
    # A bundle that does not contain the CA of Pebble's HTTPS listener.
    other = tmp_path / 'other-ca.pem'
    other.write_text(pebble.issuing_roots_pem()[0])
    result, res = account(ca_bundle=str(other), acme_account_key_path=str(tmp_path / 'k'),
                          account_create_key=True)
    assert result.rc != 0
    assert res['msg'].startswith('TLS verification of %s failed' % pebble.directory_url)


# ---------------------------------------------------------------- External Account Binding

EAB_KID = 'fleetcert-kid-1'


@pytest.fixture
def eab_ca(pebble_factory):
    """A Pebble that requires External Account Binding; returns (pebble, MAC key)."""
    mac_key = b64url(os.urandom(32))
    return pebble_factory(eab={EAB_KID: mac_key}), mac_key


def eab_account(account, ca, key_path, **variables):
    return account(directory_url=ca.directory_url, ca_bundle=ca.ca_path,
                   acme_account_key_path=str(key_path), account_create_key=True, **variables)


def test_eab_required_and_not_given_names_the_options(account, eab_ca, tmp_path):
    ca = eab_ca[0]
    window = ca.log_window()
    result, res = eab_account(account, ca, tmp_path / 'account.key')
    assert result.rc != 0
    assert res['msg'] == ('the CA at %s requires external account binding: set eab_kid and '
                          'eab_hmac_key' % ca.directory_url), res['msg']
    assert 'POST /sign-me-up' not in window.text()


def test_eab_binding_creates_the_account_then_finds_it(account, eab_ca, tmp_path):
    ca, mac_key = eab_ca
    key_path = tmp_path / 'account.key'
    result, res = eab_account(account, ca, key_path, account_eab_kid=EAB_KID,
                              account_eab_hmac_key=mac_key)
    result.assert_ok()
    assert res['changed'] is True and res['created'] is True
    assert res['status'] == 'valid'
    assert mac_key not in result.stdout + result.stderr
    assert lookup(ca, key_path)['uri'] == res['account_uri']

    again, res2 = eab_account(account, ca, key_path, account_eab_kid=EAB_KID,
                              account_eab_hmac_key=mac_key)
    again.assert_ok()
    assert res2['changed'] is False and res2['created'] is False
    assert res2['account_uri'] == res['account_uri']


@pytest.mark.parametrize('kid, use_right_key', [(EAB_KID, False), ('unknown-kid', True)],
                         ids=['wrong-mac-key', 'unknown-kid'])
def test_eab_refused_by_the_ca_reports_its_problem(account, eab_ca, tmp_path, kid, use_right_key):
    ca, mac_key = eab_ca
    key_path = tmp_path / 'account.key'
    result, res = eab_account(account, ca, key_path, account_eab_kid=kid,
                              account_eab_hmac_key=mac_key if use_right_key else b64url(os.urandom(32)))
    assert result.rc != 0
    assert res['msg'].startswith('registering the ACME account at %s' % ca.directory_url), res['msg']
    problem = res['problem']
    assert problem['type'].startswith('urn:ietf:params:acme:error:'), res
    assert problem['detail'] and problem['type'] in res['msg'] and problem['detail'] in res['msg']
    assert lookup(ca, key_path) is None


def test_eab_mac_key_that_is_not_base64url_is_refused(account, eab_ca, tmp_path):
    ca = eab_ca[0]
    window = ca.log_window()
    result, res = eab_account(account, ca, tmp_path / 'account.key', account_eab_kid=EAB_KID,
                              account_eab_hmac_key='not base64 at all!')
    assert result.rc != 0
    assert res['msg'].startswith('eab_hmac_key: not a base64url-encoded key'), res['msg']
    assert 'base64 at all' not in res['msg']
    assert window.text() == ''
    assert not (tmp_path / 'account.key').exists()


FLEET_PLAYBOOK = os.path.join(os.path.dirname(PLAYBOOK), 'fleet_account.yml')
FLEET_TASK = 'Register or find the ACME account (on the controller)'


def fleet_account(run_playbook, make_inventory, ca, key_path, **variables):
    """The fleet playbooks' own settings + account steps with these fleetcert_* variables."""
    extra = {'fleetcert_site': 'eab', 'fleetcert_names': ['eab.example'],
             'fleetcert_acme_directory_url': ca.directory_url,
             'fleetcert_acme_ca_bundle': ca.ca_path,
             'fleetcert_acme_account_key_path': str(key_path),
             'fleetcert_acme_terms_agreed': True}
    extra.update(variables)
    return run_playbook(FLEET_PLAYBOOK, inventory=make_inventory(), extra_vars=extra)


def test_fleet_variables_carry_the_binding(run_playbook, make_inventory, eab_ca, tmp_path):
    ca, mac_key = eab_ca
    key_path = tmp_path / 'account.key'
    key_path.write_bytes(crypto.private_key_to_pem(crypto.generate_private_key('ec256')))

    refused = fleet_account(run_playbook, make_inventory, ca, key_path)
    assert refused.rc != 0
    assert 'requires external account binding: set eab_kid and eab_hmac_key' in \
        refused.result(FLEET_TASK, 'localhost')['msg']

    half = fleet_account(run_playbook, make_inventory, ca, key_path,
                         fleetcert_acme_eab_kid=EAB_KID)
    assert half.rc != 0
    assert 'fleetcert_acme_eab_kid, fleetcert_acme_eab_hmac_key: set both' in half.stdout
    assert FLEET_TASK not in half.task_names

    bound = fleet_account(run_playbook, make_inventory, ca, key_path,
                          fleetcert_acme_eab_kid=EAB_KID, fleetcert_acme_eab_hmac_key=mac_key)
    bound.assert_ok()
    res = bound.result(FLEET_TASK, 'localhost')
    assert res['created'] is True
    assert mac_key not in bound.stdout + bound.stderr
    assert lookup(ca, key_path)['uri'] == res['account_uri']
