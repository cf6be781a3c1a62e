# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetcert.meteor.acme_order against real Pebble, validating through real nginx.

Orders run through ansible-playbook; the challenge files are placed on the web
container by fleetcert.meteor.acme_challenge and fetched by Pebble over HTTP.
Every issued certificate is checked with openssl against Pebble's issuing roots.
The speed path (one-step, stateless answering) is also driven in-process
through the module's code, to count what it sends.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import secrets
import stat
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ansible_collections.fleetcert.meteor.plugins.module_utils import acme_client, crypto
from ca_proxy import Rule

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
ISSUE = os.path.join(PLAYBOOKS, 'acme_order_issue.yml')
ONE_STEP = os.path.join(PLAYBOOKS, 'acme_order_one_step.yml')
BAD_INPUT = os.path.join(PLAYBOOKS, 'acme_order_bad_input.yml')
PENDING = os.path.join(PLAYBOOKS, 'acme_order_pending.yml')
WEBROOT = '/var/www/acme'

# Pebble's profiles (scripts/pebble.sh): classic 90 days, shortlived 160 hours.
CLASSIC = datetime.timedelta(days=90)
SHORTLIVED = datetime.timedelta(hours=160)

STATELESS_SITE = r"""
server {
    listen 80 default_server;
    server_name _;
    location ~ "^/\.well-known/acme-challenge/([-_A-Za-z0-9]+)$" {
        default_type text/plain;
        return 200 "$1.%s";
    }
    location / {
        return 404;
    }
}
"""


def fresh_names(count=1):
    """Names no earlier order used: Pebble reuses valid authorizations (50 %)."""
    tag = secrets.token_hex(4)
    return ['n%d-%s.acme-order.test' % (i, tag) for i in range(count)]


@pytest.fixture
def web(web_host):
    return web_host()


@pytest.fixture
def issue(run_playbook, make_inventory, pebble, tmp_path):
    """issue(names, web_hosts, ca=pebble, resolve_to=None, **order vars) -> (result, out dir).

    Challenges go to every host of web_hosts; Pebble resolves the names to
    the last of them, or to resolve_to.
    """
    counter = [0]

    def run(names, web_hosts, ca=None, resolve_to=None, **order_vars):
        ca = ca or pebble
        # challtestsrv answers with the last address added for a name.
        for host in [resolve_to] if resolve_to else web_hosts:
            for name in names:
                ca.add_a(name, host.ip)
        counter[0] += 1
        out = tmp_path / ('cert%d' % counter[0])
        extra = {
            'acme_directory_url': ca.directory_url,
            'acme_ca_bundle': ca.ca_path,
            'acme_account_key_path': str(order_vars.pop('account_key_path', tmp_path / 'account.key')),
            'challenge_webroot': WEBROOT,
            'order_names': names,
            'order_dest_dir': str(out),
        }
        extra.update(('order_' + key, value) for key, value in order_vars.items())
        result = run_playbook(ISSUE, inventory=make_inventory({'web': list(web_hosts)}),
                              extra_vars=extra)
        return result, out

    return run


def openssl(*args):
    # check=False: callers assert on the return code with the output in the message.
    return subprocess.run(['openssl'] + list(args), capture_output=True, text=True, check=False)


def check_issued(out, roots_pem, names):
    """The files in `out` form a valid certificate for `names` under Pebble's roots."""
    files = {name: str(out / name) for name in ('privkey.pem', 'cert.pem', 'chain.pem',
                                                'fullchain.pem')}
    assert stat.S_IMODE(os.stat(files['privkey.pem']).st_mode) == 0o600
    for name in ('cert.pem', 'chain.pem', 'fullchain.pem'):
        assert stat.S_IMODE(os.stat(files[name]).st_mode) == 0o644
    verify = openssl('verify', '-CAfile', roots_pem, '-untrusted', files['chain.pem'],
                     files['cert.pem'])
    assert verify.returncode == 0 and verify.stdout.strip().endswith(': OK'), verify.stdout + verify.stderr
    verify = openssl('verify', '-CAfile', roots_pem, files['fullchain.pem'])
    assert verify.returncode != 0, 'fullchain alone must not verify without the chain split'
    cert_pub = openssl('x509', '-in', files['cert.pem'], '-noout', '-pubkey').stdout
    key_pub = openssl('pkey', '-in', files['privkey.pem'], '-pubout').stdout
    assert cert_pub and cert_pub == key_pub
    with open(files['fullchain.pem'], 'rb') as handle:
        fullchain = handle.read()
    with open(files['cert.pem'], 'rb') as handle:
        leaf_pem = handle.read()
    with open(files['chain.pem'], 'rb') as handle:
        assert fullchain == leaf_pem + handle.read()
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    with open(files['privkey.pem'], 'rb') as handle:
        key = crypto.load_private_key(handle.read(), 'privkey.pem')
    return leaf, key


@pytest.fixture
def roots(pebble, tmp_path):
    return pebble.write_roots(str(tmp_path / 'roots.pem'))


def finalize_result(result):
    return result.result('Validate, finalize, download', 'localhost')


# -- issuance ----------------------------------------------------------------------

def test_single_name_two_steps_ec_key(issue, web, roots, pebble):
    names = fresh_names(1)
    window = pebble.log_window()
    result, out = issue(names, [web])
    result.assert_ok()
    res = finalize_result(result)
    leaf, key = check_issued(out, roots, names)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == 'secp256r1'
    assert res['changed'] is True
    assert res['status'] == 'valid'
    assert res['names'] == names
    assert res['serial'] == '%x' % leaf.serial_number
    assert res['not_after'] == leaf.not_valid_after_utc.isoformat()
    assert res['ari_cert_id'] == crypto.ari_cert_id(leaf)
    assert res['files'] == {'privkey.pem': True, 'cert.pem': True, 'chain.pem': True,
                            'fullchain.pem': True}
    assert 'private_key' not in res
    pending = result.result('Pending order', 'localhost')
    [challenge] = pending['challenges']
    assert challenge['name'] == names[0]
    assert challenge['path'] == '/.well-known/acme-challenge/' + challenge['token']
    assert challenge['key_authorization'] == '%s.%s' % (challenge['token'], pending['thumbprint'])
    # Pebble really fetched the file acme_challenge put into nginx's webroot.
    assert 'Attempting to validate w/ HTTP: http://%s:80%s' % (names[0], challenge['path']) \
        in window.text()
    # The order was created once, not per host or per retry.
    assert window.count('Added order "') == 1
    # acme_challenge state=absent cleaned up after the order.
    assert web.exec('ls -A %s/.well-known/acme-challenge' % WEBROOT).stdout.split() == []


def test_three_names_rsa_key_two_web_hosts(issue, web_host, roots):
    names = fresh_names(3)
    hosts = [web_host(), web_host()]
    # Pebble resolves each name to the last host added; both must serve every token.
    result, out = issue(names, hosts, key_type='rsa2048')
    result.assert_ok()
    leaf, key = check_issued(out, roots, names)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert sorted(c['name'] for c in result.result('Pending order', 'localhost')['challenges']) \
        == sorted(names)
    for host in hosts:
        assert result.result('Place challenge files', host.name)['changed'] is True


def test_given_private_key_and_rsa_account_key(issue, web, roots, tmp_path):
    names = fresh_names(1)
    given = crypto.generate_private_key('ec384')
    key_path = tmp_path / 'given.key'
    key_path.write_bytes(crypto.private_key_to_pem(given))
    result, out = issue(names, [web], private_key_path=str(key_path),
                        account_key_path=tmp_path / 'rsa-account.key',
                        account_key_type='rsa2048')
    result.assert_ok()
    leaf, key = check_issued(out, roots, names)
    assert crypto.key_matches_certificate(given, leaf)
    assert crypto.private_key_to_pem(key) == crypto.private_key_to_pem(given)
    with open(str(tmp_path / 'rsa-account.key'), 'rb') as handle:
        account_key = crypto.load_private_key(handle.read(), 'account')
    assert isinstance(account_key, rsa.RSAPrivateKey)


def test_profiles_give_different_lifetimes(issue, web, roots):
    lifetimes = {}
    for profile in ('shortlived', 'classic'):
        names = fresh_names(1)
        result, out = issue(names, [web], profile=profile)
        result.assert_ok()
        assert finalize_result(result)['profile'] == profile
        leaf, dummy = check_issued(out, roots, names)
        lifetimes[profile] = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert abs(lifetimes['shortlived'] - SHORTLIVED) < datetime.timedelta(minutes=5)
    assert abs(lifetimes['classic'] - CLASSIC) < datetime.timedelta(minutes=5)


def test_unknown_profile_is_refused_before_creating_an_order(issue, web, pebble):
    window = pebble.log_window()
    result, dummy = issue(fresh_names(1), [web], profile='no-such-profile')
    assert result.rc != 0
    res = result.result('Pending order', 'localhost')
    assert res['failed'] is True
    assert res['msg'].startswith("profile: 'no-such-profile' is not offered by %s"
                                 % pebble.directory_url)
    assert 'classic' in res['msg'] and 'shortlived' in res['msg']
    assert window.count('POST /order-plz') == 0


def test_renewal_with_replaces_then_already_replaced(issue, web, roots, pebble):
    names = fresh_names(1)
    first, out = issue(names, [web])
    first.assert_ok()
    old_leaf, dummy = check_issued(out, roots, names)
    old_id = finalize_result(first)['ari_cert_id']

    window = pebble.log_window()
    renewal, out = issue(names, [web], replaces=old_id)
    renewal.assert_ok()
    assert renewal.result('Pending order', 'localhost')['replaces_accepted'] is True
    assert finalize_result(renewal)['replaces_accepted'] is True
    assert finalize_result(renewal)['replaces'] == old_id
    assert 'is a replacement of' in window.text()
    new_leaf, dummy = check_issued(out, roots, names)
    assert new_leaf.serial_number != old_leaf.serial_number

    # A second order replacing the same certificate: Pebble answers
    # alreadyReplaced (409) and the module orders again without `replaces`.
    window = pebble.log_window()
    again, out = issue(names, [web], replaces=old_id)
    again.assert_ok()
    assert again.result('Pending order', 'localhost')['replaces_accepted'] is False
    assert finalize_result(again)['replaces_accepted'] is False
    assert 'replaces' not in finalize_result(again)
    assert window.count('POST /order-plz') >= 2
    assert window.count('Added order "') == 1
    check_issued(out, roots, names)


def test_bad_nonces_half_the_time_still_issue(issue, web, pebble_factory, tmp_path):
    flaky = pebble_factory(env={'PEBBLE_WFE_NONCEREJECT': '50'})
    roots = flaky.write_roots(str(tmp_path / 'flaky-roots.pem'))
    for dummy in range(2):
        names = fresh_names(2)
        result, out = issue(names, [web], ca=flaky, account_key_path=tmp_path / 'flaky.key')
        result.assert_ok()
        check_issued(out, roots, names)
    # Stock acme retries a bad nonce once: about 10 POSTs per order would then
    # succeed only 0.75 ** 10 = 6 % of the time.
    assert 'Configured to reject 50% of good nonces' in flaky.log_text()


def test_preferred_chain_picks_the_alternate_root(issue, web, pebble_factory, tmp_path):
    alt = pebble_factory(env={'PEBBLE_ALTERNATE_ROOTS': '1'})
    roots_pem = alt.issuing_roots_pem()
    assert len(roots_pem) == 2
    wanted = x509.load_pem_x509_certificate(roots_pem[1].encode()).subject
    wanted_cn = wanted.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    default_cn = x509.load_pem_x509_certificate(roots_pem[0].encode()).subject \
        .get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    names = fresh_names(1)
    result, out = issue(names, [web], ca=alt, account_key_path=tmp_path / 'alt.key',
                        preferred_chain=wanted_cn)
    result.assert_ok()
    chain = crypto.split_pem_chain((out / 'fullchain.pem').read_bytes())
    assert acme_client.top_issuer_name(chain) == wanted_cn != default_cn
    only_wanted = tmp_path / 'wanted-root.pem'
    only_wanted.write_text(roots_pem[1])
    verify = openssl('verify', '-CAfile', str(only_wanted), '-untrusted', str(out / 'chain.pem'),
                     str(out / 'cert.pem'))
    assert verify.returncode == 0, verify.stdout + verify.stderr


# -- failures ------------------------------------------------------------------------

def test_failed_validation_reports_the_problem_and_the_url(issue, web_host, pebble):
    """The token is placed on one host while Pebble asks another one: a 404."""
    names = fresh_names(1)
    serving, empty = web_host(), web_host()
    window = pebble.log_window()
    result, dummy = issue(names, [serving], resolve_to=empty)
    assert result.rc != 0
    res = finalize_result(result)
    assert res['failed'] is True
    token = result.result('Pending order', 'localhost')['challenges'][0]['token']
    path = '/.well-known/acme-challenge/' + token
    problem = res['problem']
    assert problem['type'] == 'urn:ietf:params:acme:error:unauthorized'
    assert '404' in problem['detail']
    assert problem['url'] in ('http://%s%s' % (names[0], path),
                              'http://%s:80%s' % (names[0], path))
    assert res['msg'].startswith('HTTP-01 validation of %s failed: '
                                 'urn:ietf:params:acme:error:unauthorized: ' % names[0])
    assert '(the CA fetched %s)' % problem['url'] in res['msg']
    assert res['order_uri'] == result.result('Pending order', 'localhost')['order_uri']
    # Validated once, never retried (failed validations count against rate
    # limits; Pebble queues one validation task per answered challenge), and
    # no finalization was attempted.
    assert window.count('Pulled a task from the Tasks queue') == 1
    assert window.count('POST /finalize-order/') == 0


# -- rate limits and maintenance (a proxy answers for Pebble, see ca_proxy.py) ------

def gaps(requests):
    """Seconds between consecutive requests."""
    return [later.when - earlier.when for earlier, later in zip(requests, requests[1:])]


def test_rate_limited_new_order_waits_retry_after_then_issues(issue, web, roots, pebble, ca_proxy):
    proxy = ca_proxy(pebble, [Rule('POST', '/order-plz', 429, retry_after=2, times=2)])
    names = fresh_names(1)
    window = pebble.log_window()
    result, out = issue(names, [web], ca=proxy)
    result.assert_ok()
    check_issued(out, roots, names)
    orders = proxy.requests_to('POST', '/order-plz')
    assert [(r.status, r.by_proxy) for r in orders] == [(429, True), (429, True), (201, False)], orders
    # Retry-After: 2 honoured both times (the clock is the proxy's, so no network slack).
    assert all(gap >= 1.95 for gap in gaps(orders)), gaps(orders)
    assert window.count('Added order "') == 1


def test_unavailable_directory_and_finalize_are_retried(issue, web, roots, pebble, ca_proxy):
    proxy = ca_proxy(pebble, [Rule('GET', '/dir', 503, retry_after=1, times=1),
                              Rule('POST', '/finalize-order/', 503, retry_after=1, times=1)])
    names = fresh_names(1)
    result, out = issue(names, [web], ca=proxy)
    result.assert_ok()
    check_issued(out, roots, names)
    for method, path in (('GET', '/dir'), ('POST', '/finalize-order/')):
        seen = proxy.requests_to(method, path)
        assert seen[0].status == 503 and seen[0].by_proxy, seen
        assert not any(r.by_proxy for r in seen[1:]) and seen[-1].status == 200, seen
        assert gaps(seen)[0] >= 0.95, seen


def test_replaces_the_ca_cannot_match_is_dropped_with_a_warning(issue, web, roots, pebble, ca_proxy):
    """Pebble 2.10 sometimes cannot find the certificate `replaces` names (serverInternal):
    a renewal must still happen, without the ARI hint, and say so."""
    names = fresh_names(1)
    first, out = issue(names, [web])
    first.assert_ok()
    old_id = finalize_result(first)['ari_cert_id']
    proxy = ca_proxy(pebble, [Rule('POST', '/order-plz', 500, payload_contains='"replaces"')])
    window = pebble.log_window()
    renewal, out = issue(names, [web], ca=proxy, replaces=old_id)
    renewal.assert_ok()
    pending = renewal.result('Pending order', 'localhost')
    assert pending['replaces_accepted'] is False
    assert pending['replaces_refused']['type'] == 'urn:ietf:params:acme:error:serverInternal'
    assert any('the CA refused replaces=%s' % old_id in w for w in pending.get('warnings', [])), pending
    orders = proxy.requests_to('POST', '/order-plz')
    assert [(r.status, r.by_proxy) for r in orders][0] == (500, True) and not orders[-1].by_proxy
    assert window.count('Added order "') == 1
    assert 'is a replacement of' not in window.text()
    check_issued(out, roots, names)


def test_retry_after_beyond_the_budget_fails_at_once_with_the_ca_problem(issue, web, pebble,
                                                                         ca_proxy):
    """Let's Encrypt's rate limits answer with Retry-After of hours: no waiting, no hammering."""
    proxy = ca_proxy(pebble, [Rule('POST', '/order-plz', 429, retry_after=3600)])
    window = pebble.log_window()
    started = time.monotonic()
    result, dummy = issue(fresh_names(1), [web], ca=proxy)
    assert result.rc != 0
    res = result.result('Pending order', 'localhost')
    assert res['failed'] is True
    assert res['problem']['type'] == 'urn:ietf:params:acme:error:rateLimited'
    assert res['problem']['status'] == 429 and res['problem']['retry_after'] == 3600
    assert 'too many new orders recently (test proxy)' in res['msg']
    assert res['msg'].endswith('(the CA asks to retry after 3600 s)'), res['msg']
    assert len(proxy.requests_to('POST', '/order-plz')) == 1
    assert window.count('Added order "') == 0
    # Well under the 60 s budget: the long Retry-After was not slept on.
    assert time.monotonic() - started < acme_client.RETRY_AFTER_BUDGET


def test_rate_limited_again_and_again_stops_within_the_budget(pebble, ca_proxy, tmp_path,
                                                              monkeypatch):
    """Short Retry-Afters that never end: the client gives up once the next wait would
    exceed RETRY_AFTER_BUDGET (shrunk here to keep the test short) and reports the CA's problem."""
    proxy = ca_proxy(pebble, [Rule('POST', '/order-plz', 429, retry_after=1)])
    monkeypatch.setattr(acme_client, 'RETRY_AFTER_BUDGET', 3.5)
    key = crypto.generate_private_key('ec256')
    client = acme_client.AcmeClient(proxy.directory_url, key, ca_bundle=proxy.ca_path)
    client.register_or_find_account([], True)
    with pytest.raises(acme_client.FleetcertError) as info:
        client.new_order(fresh_names(1))
    orders = proxy.requests_to('POST', '/order-plz')
    # Waits of 1 s while the total stays within 3.5 s: 1, 2, 3; the fourth would be 4.
    assert len(orders) == 4, orders
    assert all(gap >= 0.95 for gap in gaps(orders)), gaps(orders)
    assert info.value.details['problem']['type'] == 'urn:ietf:params:acme:error:rateLimited'


BAD_INPUTS = [
    ('wildcard', {'names': ['ok.example.test', '*.example.test']},
     "names[1]: '*.example.test' is a wildcard"),
    ('empty name', {'names': ['']}, 'names[0]: must not be empty'),
    ('no names', {'names': []}, 'names: at least one DNS name is required'),
    ('IP address', {'names': ['192.0.2.1']}, "names[0]: '192.0.2.1' is an IP address"),
    ('invalid label', {'names': ['bad_label.example.test']}, 'names[0]:'),
    ('unknown key type', {'state': 'valid', 'names': ['ok.example.test'], 'key_type': 'ec521',
                          'return_private_key': True},
     'value of key_type must be one of'),
    ('unreadable certificate key', {'state': 'valid', 'names': ['ok.example.test'],
                                    'private_key_path': '/nonexistent/key.pem'},
     'private_key_path: cannot read /nonexistent/key.pem'),
    ('key would be lost', {'state': 'valid', 'names': ['ok.example.test']},
     'return_private_key: a new private key is generated'),
    ('plain http directory', {'directory_url': 'http://localhost:14100/dir'},
     'directory_url'),
    ('unreadable account key', {'account_key_path': '/nonexistent/account.key'},
     'account_key_path: cannot read /nonexistent/account.key'),
    ('bad replaces', {'replaces': 'not an id'}, "replaces: 'not an id' is not an ARI"),
]


def test_bad_input_fails_before_any_request(run_playbook, make_inventory, pebble, tmp_path):
    key = tmp_path / 'account.key'
    key.write_bytes(crypto.private_key_to_pem(crypto.generate_private_key('ec256')))
    cases = []
    for case, params, dummy in BAD_INPUTS:
        item = dict(params, case=case)
        item.setdefault('names', ['ok.example.test'])
        cases.append(item)
    window = pebble.log_window()
    result = run_playbook(BAD_INPUT, inventory=make_inventory(), extra_vars={
        'acme_directory_url': pebble.directory_url,
        'acme_ca_bundle': pebble.ca_path,
        'acme_account_key_path': str(key),
        'bad_inputs': cases,
    })
    result.assert_ok()
    items = result.result('Call acme_order with bad input', 'localhost')['results']
    assert len(items) == len(BAD_INPUTS)
    for (case, dummy, expected), item in zip(BAD_INPUTS, items):
        assert 'order_uri' not in item and item['msg'], case
        assert expected in item['msg'], (case, item['msg'])
    # Not one request reached the CA (Pebble logs every request it handles).
    assert window.text() == ''


def test_check_mode_creates_no_order(run_playbook, make_inventory, pebble, tmp_path):
    key = tmp_path / 'account.key'
    key.write_bytes(crypto.private_key_to_pem(crypto.generate_private_key('ec256')))
    window = pebble.log_window()
    result = run_playbook(PENDING, inventory=make_inventory(), extra_vars={
        'acme_directory_url': pebble.directory_url,
        'acme_ca_bundle': pebble.ca_path,
        'acme_account_key_path': str(key),
        'order_names': fresh_names(1),
        'order_check_mode': True,
    })
    result.assert_ok()
    res = result.result('Pending order', 'localhost')
    assert res['changed'] is True
    assert 'order_uri' not in res
    assert window.text() == ''


# -- the one-step, stateless path ------------------------------------------------------

@pytest.fixture
def stateless_web(web_host, tmp_path):
    """A web host answering every token with <token>.<thumbprint> of a new account key."""
    key = crypto.generate_private_key('ec256')
    key_path = tmp_path / 'stateless-account.key'
    key_path.write_bytes(crypto.private_key_to_pem(key))
    host = web_host()
    host.put_file('/etc/nginx/sites-enabled/default', STATELESS_SITE % crypto.jwk_thumbprint(key))
    host.exec('nginx -t -q && nginx -s reload')
    # A reload is asynchronous: old workers answer with the old site for a while.
    expected = 'probe.%s' % crypto.jwk_thumbprint(key)
    deadline = time.time() + 30
    while host.exec('curl -s http://127.0.0.1/.well-known/acme-challenge/probe',
                    check=False).stdout != expected:
        assert time.time() < deadline, 'nginx in %s did not take the stateless site' % host.name
        time.sleep(0.1)
    return host, key, key_path


def test_one_step_stateless_with_returned_key(run_playbook, make_inventory, pebble,
                                              stateless_web, roots, tmp_path):
    host, dummy, key_path = stateless_web
    names = fresh_names(2)
    for name in names:
        pebble.add_a(name, host.ip)
    result = run_playbook(ONE_STEP, inventory=make_inventory(), extra_vars={
        'acme_directory_url': pebble.directory_url,
        'acme_ca_bundle': pebble.ca_path,
        'acme_account_key_path': str(key_path),
        'order_names': names,
    })
    result.assert_ok()
    # The task that returned the key is censored in the output ...
    order_task = result.result('Order, validate, finalize, download', 'localhost')
    assert 'private_key' not in order_task and 'certificate' not in order_task
    assert 'PRIVATE KEY' not in result.stdout and 'PRIVATE KEY' not in result.stderr
    # ... but the registered value was usable by the next task.
    facts = result.result('Keep the non-secret part of the result for the test',
                          'localhost')['ansible_facts']
    assert facts['order_key_matches'] is True
    public = facts['order_public']
    assert public['status'] == 'valid' and public['names'] == names
    leaf = x509.load_pem_x509_certificate(public['certificate'].encode())
    assert public['fullchain'] == public['certificate'] + public['chain']
    (tmp_path / 'chain.pem').write_text(public['chain'])
    (tmp_path / 'cert.pem').write_text(public['certificate'])
    verify = openssl('verify', '-CAfile', roots, '-untrusted', str(tmp_path / 'chain.pem'),
                     str(tmp_path / 'cert.pem'))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)


def test_speed_path_in_process(pebble_factory, stateless_web):
    """What the module does for state=valid without order_uri, counted at the CA.

    One directory fetch and one new-nonce for the whole order (nonces are
    reused), and one request per poll however many names. Pebble rejects no
    nonce here, so the counts are exact.
    """
    ca = pebble_factory(env={'PEBBLE_WFE_NONCEREJECT': '0'})
    host, key, dummy = stateless_web
    names = fresh_names(3)
    for name in names:
        ca.add_a(name, host.ip)
    client = acme_client.AcmeClient(ca.directory_url, key, ca_bundle=ca.ca_path)
    account = client.register_or_find_account([], agree_tos=True)
    window = ca.log_window()
    fast = acme_client.AcmeClient(ca.directory_url, key, ca_bundle=ca.ca_path,
                                  account_uri=account['uri'])
    started = time.monotonic()
    order, dummy = fast.new_order(names)
    cert_key = crypto.generate_private_key('ec256')
    chain = fast.complete_order(order, crypto.build_csr(cert_key, names), time.monotonic() + 60)
    elapsed = time.monotonic() - started
    assert crypto.key_matches_certificate(cert_key, chain[0])
    assert sorted(crypto.certificate_names(chain[0])) == sorted(names)
    text = window.text()
    assert text.count('GET /dir') == 1
    assert text.count('HEAD /nonce-plz') + text.count('GET /nonce-plz') == 1
    assert text.count('POST /order-plz') == 1
    assert text.count('POST /chalZ/') == 3
    assert text.count('POST /finalize-order/') == 1
    assert text.count('POST /certZ/') == 1
    # Every request the client sent reached Pebble, and nothing else did.
    assert fast.request_count == text.count(' -> calling handler()')
    # directory + nonce + new-order + 3 authorizations + 3 answers + finalize
    # + download = 11, plus a few polls.
    assert fast.request_count <= 11 + 4
    # Not a benchmark (bench/ is); a guard against sleeping by mistake, generous
    # for a shared 2-core machine. Pebble's Retry-After (1 s) is honoured.
    assert elapsed < 10, elapsed
    sys.stderr.write('speed path: %.3f s, %d requests\n' % (elapsed, fast.request_count))


def test_finalized_order_is_downloaded_again(pebble, stateless_web):
    """An interrupted run left a valid order: completing it downloads, it does not reorder."""
    host, key, dummy = stateless_web
    names = fresh_names(1)
    pebble.add_a(names[0], host.ip)
    client = acme_client.AcmeClient(pebble.directory_url, key, ca_bundle=pebble.ca_path)
    client.register_or_find_account([], agree_tos=True)
    order, dummy = client.new_order(names)
    cert_key = crypto.generate_private_key('ec256')
    csr = crypto.build_csr(cert_key, names)
    first = client.complete_order(order, csr, time.monotonic() + 60)

    window = pebble.log_window()
    again = client.get_order(order.uri)
    assert again.body.status.name == 'valid'
    second = client.complete_order(again, csr, time.monotonic() + 60)
    assert second[0].serial_number == first[0].serial_number
    assert window.count('POST /finalize-order/') == 0
    assert window.count('POST /order-plz') == 0
    assert window.count('POST /chalZ/') == 0
    # ARI for the certificate: the window lies inside its validity.
    window_info = acme_client.fetch_renewal_window(pebble.directory_url, first[0],
                                                   ca_bundle=pebble.ca_path)
    assert first[0].not_valid_before_utc < window_info['start'] < window_info['end'] \
        < first[0].not_valid_after_utc
    assert window_info['retry_after'] is None or window_info['retry_after'] >= 0
