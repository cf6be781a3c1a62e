# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetcert.meteor.cert_info on certificates issued by real Pebble.

The certificates are issued through acme_order + acme_challenge + nginx in a
container; cert_info's facts are checked against openssl, and its ARI path
against Pebble's own renewalInfo (including a window forced through Pebble's
management API).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import secrets
import socket
import ssl
import subprocess
import urllib.request

import pytest

import fleetcert_testbed as tb

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
ISSUE = os.path.join(PLAYBOOKS, 'cert_info_issue.yml')
RUN = os.path.join(PLAYBOOKS, 'cert_info_run.yml')
TASK = 'Run cert_info'
UTC = datetime.timezone.utc


def parse_iso(text):
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC)


def openssl(*args):
    return subprocess.run(['openssl'] + list(args), check=True, capture_output=True, text=True).stdout


def openssl_serial(cert_path):
    """The serial openssl reads, as cert_info writes it (lowercase hex, no leading zeros)."""
    return '%x' % int(openssl('x509', '-noout', '-serial', '-in', cert_path).strip().split('=', 1)[1], 16)


def https_context(ca_path):
    # The machine exports SSL_CERT_FILE & co.: trust exactly Pebble's API CA.
    return ssl.create_default_context(cafile=ca_path)


def fetch_json(url, ca_path):
    with urllib.request.urlopen(url, context=https_context(ca_path), timeout=10) as response:
        return response.status, json.loads(response.read().decode())


def set_renewal_info(pebble, cert_pem, start, end, explanation_url=None):
    """Force the ARI answer for one certificate (Pebble >= 2.8 management API)."""
    window = {'suggestedWindow': {'start': start.strftime('%Y-%m-%dT%H:%M:%SZ'),
                                  'end': end.strftime('%Y-%m-%dT%H:%M:%SZ')}}
    if explanation_url:
        window['explanationURL'] = explanation_url
    body = json.dumps({'Certificate': cert_pem, 'ARIResponse': json.dumps(window)}).encode()
    request = urllib.request.Request(pebble.mgmt_url + '/set-renewal-info/', data=body, method='POST')
    with urllib.request.urlopen(request, context=https_context(pebble.ca_path), timeout=10) as response:
        assert response.status == 200


def renewal_info_url(pebble, cert_id):
    _status, directory = fetch_json(pebble.directory_url, pebble.ca_path)
    return directory['renewalInfo'].rstrip('/') + '/' + cert_id


def rfc3339(text):
    # Go sends RFC 3339 with optional nanoseconds; the module reports seconds.
    return datetime.datetime.strptime(text[:19], '%Y-%m-%dT%H:%M:%S').replace(tzinfo=UTC)


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def issue(pebble, web, directory, names, profile):
    result = tb.run_playbook(ISSUE, inventory=tb.make_inventory({'web': [web]}), extra_vars={
        'acme_directory_url': pebble.directory_url,
        'acme_ca_bundle': pebble.ca_path,
        'acme_account_key_path': os.path.join(directory, 'account.pem'),
        'issue_names': names,
        'issue_profile': profile,
        'issue_dest_dir': os.path.join(directory, profile),
        'challenge_webroot': tb.ACME_WEBROOT,
    })
    result.assert_ok()
    return os.path.join(directory, profile)


@pytest.fixture(scope='module')
def issued(pebble, podman_network, testbed_session_id, tmp_path_factory):
    """A classic (90 days, two names) and a shortlived (160 h) certificate from Pebble."""
    web = tb.start_web(tb.run_container(tb.unique_name(testbed_session_id, 'certinfo'), tb.image('web'),
                                        network=podman_network.name, session_id=testbed_session_id))
    tag = secrets.token_hex(4)
    names = ['www.info-%s.example.test' % tag, 'info-%s.example.test' % tag]
    short_name = 'short-%s.example.test' % tag
    for name in names + [short_name]:
        pebble.add_a(name, web.ip)
    directory = str(tmp_path_factory.mktemp('cert-info'))
    try:
        classic = issue(pebble, web, directory, names, 'classic')
        short = issue(pebble, web, directory, [short_name], 'shortlived')
    finally:
        for name in names + [short_name]:
            pebble.clear_a(name)
        web.remove()
    return {'names': names, 'short_name': short_name, 'classic': classic, 'short': short,
            'dir': directory}


def cert_info(run_playbook, make_inventory, hosts='localhost', groups=None, check_mode=False, **params):
    extra = {'cert_info_hosts': hosts}
    extra.update(('info_' + key, value) for key, value in params.items())
    return run_playbook(RUN, inventory=make_inventory(groups or {}), extra_vars=extra, check_mode=check_mode)


def ok_result(result, host='localhost'):
    result.assert_ok()
    res = result.result(TASK, host)
    assert res['changed'] is False
    return res


def test_fresh_certificate_matches_openssl_and_pebble_ari(run_playbook, make_inventory, pebble, issued):
    live = issued['classic']
    before = datetime.datetime.now(UTC)
    res = ok_result(cert_info(
        run_playbook, make_inventory,
        path=os.path.join(live, 'fullchain.pem'), private_key_path=os.path.join(live, 'privkey.pem'),
        names=[issued['names'][1].upper(), issued['names'][0] + '.'],
        directory_url=pebble.directory_url, ca_bundle=pebble.ca_path))

    assert res['exists'] is True
    assert res['should_renew'] is False
    assert res['renewal_reason'] == 'valid'
    assert res['ari_error'] is None
    assert res['key_matches'] is True
    assert res['chain_length'] == 2
    assert sorted(res['names']) == sorted(issued['names'])
    assert res['self_signed'] is False
    assert 'Pebble Intermediate' in res['issuer']
    with open(os.path.join(live, 'cert.pem')) as handle:
        assert res['certificate'] == handle.read()

    cert_path = os.path.join(live, 'cert.pem')
    serial = openssl_serial(cert_path)
    assert int(res['serial'], 16) == int(serial, 16)
    assert res['serial'] == res['serial'].lower() and ':' not in res['serial']
    fingerprint = openssl('x509', '-noout', '-fingerprint', '-sha256', '-in', cert_path).strip()
    assert res['fingerprint_sha256'] == fingerprint.split('=', 1)[1].replace(':', '').lower()
    end = openssl('x509', '-noout', '-enddate', '-in', cert_path).strip().split('=', 1)[1]
    assert parse_iso(res['not_after']) == datetime.datetime.strptime(
        end, '%b %d %H:%M:%S %Y GMT').replace(tzinfo=UTC)
    lifetime = parse_iso(res['not_after']) - parse_iso(res['not_before'])
    assert abs(lifetime - datetime.timedelta(days=90)) < datetime.timedelta(seconds=2)
    assert 89.9 < res['days_left'] <= 90.0
    assert abs(res['seconds_left'] - (parse_iso(res['not_after']) - before).total_seconds()) < 60
    assert res['lifetime_fraction_left'] > 0.99

    # The ARI certificate id is the one Pebble knows, and its window is what was used.
    status, info = fetch_json(renewal_info_url(pebble, res['ari_cert_id']), pebble.ca_path)
    assert status == 200
    window = res['renewal_window']
    assert parse_iso(window['start']) == rfc3339(info['suggestedWindow']['start'])
    assert parse_iso(window['end']) == rfc3339(info['suggestedWindow']['end'])
    assert window['retry_after'] > 0
    renew_at = parse_iso(res['renew_at'])
    assert parse_iso(window['start']) <= renew_at <= parse_iso(window['end'])
    # Pebble suggests renewing with about a third of the lifetime left.
    assert abs((parse_iso(res['not_after']) - renew_at) - lifetime / 3) < datetime.timedelta(days=2)


def test_pebble_forced_window_makes_it_due(run_playbook, make_inventory, pebble, issued):
    live = issued['short']
    with open(os.path.join(live, 'cert.pem')) as handle:
        cert_pem = handle.read()
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    params = dict(path=os.path.join(live, 'fullchain.pem'), directory_url=pebble.directory_url,
                  ca_bundle=pebble.ca_path)

    # A window in the past: what a CA answers when it wants the certificate replaced now.
    start, end = now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1)
    set_renewal_info(pebble, cert_pem, start, end, explanation_url='https://ca.example.test/incident')
    res = ok_result(cert_info(run_playbook, make_inventory, **params))
    assert res['should_renew'] is True
    assert res['renewal_reason'] == 'ari_window'
    assert res['renewal_window']['explanation_url'] == 'https://ca.example.test/incident'
    assert start <= parse_iso(res['renew_at']) <= end

    # A window around now: one instant inside it, the same on every run.
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=1)
    set_renewal_info(pebble, cert_pem, start, end)
    first = ok_result(cert_info(run_playbook, make_inventory, **params))
    second = ok_result(cert_info(run_playbook, make_inventory, **params))
    assert first['renew_at'] == second['renew_at']
    renew_at = parse_iso(first['renew_at'])
    assert start <= renew_at <= end
    assert first['should_renew'] is (datetime.datetime.now(UTC) >= renew_at)
    assert first['renewal_reason'] == ('ari_window' if first['should_renew'] else 'valid')

    # A window in the future overrides the lifetime rule even with remaining_fraction 1.0.
    start, end = now + datetime.timedelta(days=3), now + datetime.timedelta(days=4)
    set_renewal_info(pebble, cert_pem, start, end)
    res = ok_result(cert_info(run_playbook, make_inventory, remaining_fraction=1.0, **params))
    assert res['should_renew'] is False
    assert start <= parse_iso(res['renew_at']) <= end


def test_lifetime_rule_without_ari_on_a_short_lived_certificate(run_playbook, make_inventory, issued):
    path = os.path.join(issued['short'], 'fullchain.pem')
    res = ok_result(cert_info(run_playbook, make_inventory, path=path))
    lifetime = parse_iso(res['not_after']) - parse_iso(res['not_before'])
    assert abs(lifetime - datetime.timedelta(hours=160)) < datetime.timedelta(seconds=2)
    assert 6.6 < res['days_left'] <= 6.67
    assert res['should_renew'] is False
    assert res['renewal_reason'] == 'valid'
    assert res['renewal_window'] is None
    expected = parse_iso(res['not_after']) - lifetime * 0.3333
    assert abs(parse_iso(res['renew_at']) - expected) <= datetime.timedelta(seconds=1)

    res = ok_result(cert_info(run_playbook, make_inventory, path=path, remaining_fraction=1.0))
    assert res['should_renew'] is True
    assert res['renewal_reason'] == 'lifetime'
    assert res['renew_at'] == res['not_before']


def test_unreachable_ari_falls_back_to_the_lifetime_rule_with_a_warning(
        run_playbook, make_inventory, pebble, issued):
    res = ok_result(cert_info(
        run_playbook, make_inventory, path=os.path.join(issued['short'], 'fullchain.pem'),
        remaining_fraction=1.0, directory_url='https://localhost:%d/dir' % free_port(),
        ca_bundle=pebble.ca_path, request_timeout=3))
    assert res['renewal_reason'] == 'lifetime'
    assert res['renewal_window'] is None
    assert 'cannot reach' in res['ari_error']
    assert any('ARI renewal information unavailable' in w for w in res.get('warnings', []))


def test_key_matches_false_with_another_real_key(run_playbook, make_inventory, issued, tmp_path):
    other = tmp_path / 'other.pem'
    subprocess.run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
                    '-out', str(other)], check=True, capture_output=True)
    fullchain = os.path.join(issued['classic'], 'fullchain.pem')
    res = ok_result(cert_info(run_playbook, make_inventory, path=fullchain, private_key_path=str(other)))
    assert res['key_matches'] is False

    key_text = other.read_text()
    result = cert_info(run_playbook, make_inventory, path=fullchain, private_key_content=key_text)
    assert ok_result(result)['key_matches'] is False
    body = key_text.splitlines()[1]
    assert body not in result.stdout and body not in result.stderr

    with open(os.path.join(issued['classic'], 'privkey.pem')) as handle:
        own = handle.read()
    assert ok_result(cert_info(run_playbook, make_inventory, path=fullchain,
                               private_key_content=own))['key_matches'] is True
    missing = ok_result(cert_info(run_playbook, make_inventory, path=fullchain,
                                  private_key_path=str(tmp_path / 'nokey.pem')))
    assert missing['key_matches'] is False
    assert ok_result(cert_info(run_playbook, make_inventory, path=fullchain))['key_matches'] is None


def test_missing_certificate_is_due_not_a_failure(run_playbook, make_inventory, tmp_path):
    res = ok_result(cert_info(run_playbook, make_inventory, path=str(tmp_path / 'absent' / 'fullchain.pem'),
                              names=['app.example.test']))
    assert res['exists'] is False
    assert res['should_renew'] is True
    assert res['renewal_reason'] == 'missing'
    assert res['names'] == []


def test_files_that_are_not_certificates_fail_naming_the_path(run_playbook, make_inventory, issued, tmp_path):
    key_path = os.path.join(issued['classic'], 'privkey.pem')
    result = cert_info(run_playbook, make_inventory, path=key_path)
    assert result.rc != 0
    res = result.result(TASK, 'localhost')
    assert res['msg'] == 'path: %s: no PEM certificate found' % key_path
    assert 'PRIVATE' not in result.stdout

    with open(os.path.join(issued['classic'], 'fullchain.pem')) as handle:
        fullchain = handle.read()
    truncated = tmp_path / 'truncated.pem'
    truncated.write_text(fullchain[:len(fullchain) - 200])
    result = cert_info(run_playbook, make_inventory, path=str(truncated))
    assert result.rc != 0
    assert result.result(TASK, 'localhost')['msg'].startswith('path: %s: a PEM certificate is truncated' % truncated)


def test_changed_names_make_it_due(run_playbook, make_inventory, issued):
    res = ok_result(cert_info(run_playbook, make_inventory, path=os.path.join(issued['classic'], 'fullchain.pem'),
                              names=[issued['names'][0]]))
    assert res['should_renew'] is True
    assert res['renewal_reason'] == 'names_changed'

    result = cert_info(run_playbook, make_inventory, path=os.path.join(issued['classic'], 'fullchain.pem'),
                       names=['*.example.test'])
    assert result.rc != 0
    assert result.result(TASK, 'localhost')['msg'].startswith("names[0]: '*.example.test' is a wildcard")


def test_content_option_gives_the_same_facts(run_playbook, make_inventory, issued):
    path = os.path.join(issued['classic'], 'fullchain.pem')
    with open(path) as handle:
        content = handle.read()
    by_path = ok_result(cert_info(run_playbook, make_inventory, path=path))
    by_content = ok_result(cert_info(run_playbook, make_inventory, content=content))
    for key in ('serial', 'fingerprint_sha256', 'names', 'chain_length', 'not_after', 'renew_at', 'ari_cert_id'):
        assert by_content[key] == by_path[key]


def test_a_debian_node_agrees_with_the_controller_in_check_mode(run_playbook, make_inventory, web_host, issued):
    """Nodes run Debian 12's python3-cryptography 38; the decision must be identical."""
    node = web_host()
    assert node.exec(['python3', '-c', 'import cryptography; print(cryptography.__version__)']
                     ).stdout.startswith('38.')
    with open(os.path.join(issued['short'], 'fullchain.pem')) as handle:
        node.put_file('/etc/fleetcert/fullchain.pem', handle.read())
    with open(os.path.join(issued['short'], 'privkey.pem')) as handle:
        node.put_file('/etc/fleetcert/privkey.pem', handle.read(), mode='0600')
    params = dict(names=[issued['short_name']], remaining_fraction=0.5)
    on_node = ok_result(cert_info(run_playbook, make_inventory, hosts='web', groups={'web': [node]},
                                  check_mode=True, path='/etc/fleetcert/fullchain.pem',
                                  private_key_path='/etc/fleetcert/privkey.pem', **params), host=node.name)
    on_controller = ok_result(cert_info(run_playbook, make_inventory,
                                        path=os.path.join(issued['short'], 'fullchain.pem'),
                                        private_key_path=os.path.join(issued['short'], 'privkey.pem'), **params))
    assert on_node['key_matches'] is True
    for key in ('should_renew', 'renewal_reason', 'renew_at', 'serial', 'fingerprint_sha256', 'names',
                'not_before', 'not_after', 'ari_cert_id', 'chain_length', 'key_matches'):
        assert on_node[key] == on_controller[key], key


TLS_SITES = '''
server {
    listen 443 ssl default_server;
    ssl_certificate /etc/fleetcert/short/fullchain.pem;
    ssl_certificate_key /etc/fleetcert/short/privkey.pem;
    return 204;
}
server {
    listen 443 ssl;
    server_name %(name)s;
    ssl_certificate /etc/fleetcert/app/live/fullchain.pem;
    ssl_certificate_key /etc/fleetcert/app/live/privkey.pem;
    return 204;
}
'''


def test_served_certificate_on_a_node_by_sni_and_the_version_behind_live(
        run_playbook, make_inventory, web_host, issued):
    """nginx on a Debian node serves two certificates by SNI; cert_info reads the one for
    the first name (or server_name), and resolves `live` to its version directory."""
    node = web_host()
    version_dir = '/etc/fleetcert/app/versions/20260101000000-0123456789abcdef'
    for source, target in ((issued['classic'], version_dir), (issued['short'], '/etc/fleetcert/short')):
        for name in ('fullchain.pem', 'privkey.pem'):
            with open(os.path.join(source, name)) as handle:
                node.put_file('%s/%s' % (target, name), handle.read(), mode='0600')
    node.exec(['ln', '-s', 'versions/20260101000000-0123456789abcdef', '/etc/fleetcert/app/live'])
    node.put_file('/etc/nginx/conf.d/tls.conf', TLS_SITES % {'name': issued['names'][0]})
    # The reload returns before the new workers listen on 443.
    node.exec('nginx -t -q && nginx -s reload && for i in $(seq 100); do '
              'curl -sk -o /dev/null https://127.0.0.1/ && exit 0; sleep 0.1; done; exit 1')
    classic_serial = openssl_serial(os.path.join(issued['classic'], 'fullchain.pem'))
    short_serial = openssl_serial(os.path.join(issued['short'], 'fullchain.pem'))

    def on_node(**params):
        result = cert_info(run_playbook, make_inventory, hosts='web', groups={'web': [node]}, check_mode=True,
                           path='/etc/fleetcert/app/live/fullchain.pem', names=issued['names'], **params)
        return ok_result(result, host=node.name)

    res = on_node(served_at='127.0.0.1:443')
    assert res['serial'] == classic_serial
    assert res['served_serial'] == res['serial'] and res['served_error'] is None, res
    assert res['resolved_path'] == version_dir + '/fullchain.pem'

    other = on_node(served_at='127.0.0.1:443', server_name=issued['short_name'])
    assert other['served_serial'] == short_serial != res['serial']

    # Nothing listens on 8443 there: reported, not fatal, and the rest of the facts stand.
    closed = on_node(served_at='127.0.0.1:8443')
    assert closed['served_serial'] is None
    assert closed['served_error'].startswith(
        'no certificate could be read from 127.0.0.1:8443 (SNI %s): ' % issued['names'][0]), closed
    assert closed['serial'] == res['serial'] and closed['should_renew'] is False


@pytest.mark.parametrize('served_at, says', [
    ('127.0.0.1', 'served_at: '),
    ('127.0.0.1:99999', 'the port must be a number from 1 to 65535'),
    ('https://127.0.0.1:443', 'is not host:port'),
])
def test_a_bad_served_at_fails_naming_the_option(run_playbook, make_inventory, issued, served_at, says):
    result = cert_info(run_playbook, make_inventory, path=os.path.join(issued['classic'], 'fullchain.pem'),
                       served_at=served_at)
    assert result.rc != 0
    msg = result.result(TASK, 'localhost')['msg']
    assert msg.startswith('served_at: ') and says in msg, msg
