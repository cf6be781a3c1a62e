# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetcert.meteor.cert_deploy on a real node: nginx in a container, Pebble certificates.

What nginx serves after a reload is read from the host with openssl s_client
and verified against Pebble's issuing root; the tree on the node is inspected
with podman exec.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import subprocess
import textwrap
import time

import pytest

import fleetcert_testbed as tb

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
ISSUE = os.path.join(PLAYBOOKS, 'cert_info_issue.yml')
CERT_ROOT = '/etc/fleetcert/certs'
SITE_DIR = CERT_ROOT + '/app'
TASK = 'Run cert_deploy'
OPTIONS = ('cert_root', 'site', 'state', 'certificate', 'chain', 'private_key_content', 'names',
           'version', 'keep_versions')

# The playbook passes every option through, omitted unless the test sets it.
DEPLOY_PLAYBOOK = textwrap.dedent('''\
    - name: cert_deploy on the web hosts
      hosts: web
      gather_facts: false
      tasks:
        - name: Run cert_deploy
          fleetcert.meteor.cert_deploy:
    %s
          register: deploy
    ''') % '\n'.join('        %s: "{{ deploy_%s | default(omit) }}"' % (o, o) for o in OPTIONS)

TLS_SITE = textwrap.dedent('''\
    server {
        listen 443 ssl;
        server_name _;
        ssl_certificate %(live)s/fullchain.pem;
        ssl_certificate_key %(live)s/privkey.pem;
        location / { return 200 "ok\\n"; }
    }
    ''') % {'live': SITE_DIR + '/live'}


def openssl(*args, **kwargs):
    return subprocess.run(['openssl'] + list(args), check=True, capture_output=True, text=True,
                          **kwargs).stdout


def serial_of(pem_path):
    return openssl('x509', '-noout', '-serial', '-in', pem_path).split('=', 1)[1].strip().lower().lstrip('0')


def served_serial(host, name, roots=None):
    """(serial nginx serves on 443, error); with `roots`, only if the chain verifies against them."""
    args = ['s_client', '-connect', '%s:443' % host.ip, '-servername', name]
    if roots:
        args += ['-CAfile', roots, '-verify_return_error', '-verify_hostname', name]
    proc = subprocess.run(['openssl'] + args, input='', capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, proc.stderr[-2000:]
    pem = openssl('x509', '-noout', '-serial', input=proc.stdout)
    return pem.split('=', 1)[1].strip().lower().lstrip('0'), None


def expect_served(host, name, serial, roots=None, timeout=10):
    """Wait for nginx to serve `serial`: a reload is a signal, new workers take a moment."""
    deadline = time.time() + timeout
    seen = error = None
    while time.time() < deadline:
        seen, error = served_serial(host, name, roots)
        if seen == serial:
            return
        time.sleep(0.2)
    raise AssertionError('%s serves %s, expected %s%s' % (host.name, seen, serial,
                                                          '\n' + error if error else ''))


def read(path):
    with open(path) as handle:
        return handle.read()


@pytest.fixture(scope='module')
def issued(pebble, podman_network, testbed_session_id, tmp_path_factory):
    """Three certificates for one name from Pebble (like three renewals) and its roots."""
    web = tb.start_web(tb.run_container(tb.unique_name(testbed_session_id, 'deployca'), tb.image('web'),
                                        network=podman_network.name, session_id=testbed_session_id))
    name = 'app-%s.example.test' % secrets.token_hex(4)
    directory = str(tmp_path_factory.mktemp('cert-deploy'))
    pebble.add_a(name, web.ip)
    certs = []
    try:
        for n in range(3):
            dest = os.path.join(directory, 'c%d' % n)
            tb.run_playbook(ISSUE, inventory=tb.make_inventory({'web': [web]}), extra_vars={
                'acme_directory_url': pebble.directory_url,
                'acme_ca_bundle': pebble.ca_path,
                'acme_account_key_path': os.path.join(directory, 'account.pem'),
                'issue_names': [name],
                'issue_profile': 'classic',
                'issue_dest_dir': dest,
                'challenge_webroot': tb.ACME_WEBROOT,
            }).assert_ok()
            certs.append({'cert': read(os.path.join(dest, 'cert.pem')),
                          'chain': read(os.path.join(dest, 'chain.pem')),
                          'key': read(os.path.join(dest, 'privkey.pem')),
                          'serial': serial_of(os.path.join(dest, 'cert.pem'))})
    finally:
        pebble.clear_a(name)
        web.remove()
    roots = os.path.join(directory, 'roots.pem')
    pebble.write_roots(roots)
    return {'name': name, 'certs': certs, 'roots': roots}


@pytest.fixture
def deploy(run_playbook, make_inventory, tmp_path):
    playbook = tmp_path / 'deploy.yml'
    playbook.write_text(DEPLOY_PLAYBOOK)

    def run(node, check_mode=False, diff=False, **params):
        extra = {'deploy_' + key: value for key, value in params.items()}
        extra.setdefault('deploy_site', 'app')
        result = run_playbook(str(playbook), inventory=make_inventory({'web': [node]}), extra_vars=extra,
                              check_mode=check_mode, diff=diff)
        return result, result.result(TASK, node.name)
    return run


def present(cert):
    return {'certificate': cert['cert'], 'chain': cert['chain'], 'private_key_content': cert['key']}


def live(node):
    return node.exec(['readlink', SITE_DIR + '/live']).stdout.strip()


def versions(node):
    return sorted(node.exec('ls -A %s/versions' % SITE_DIR).stdout.split())


def reload_nginx(node):
    node.exec('nginx -t -q && nginx -s reload')


@pytest.fixture
def node(web_host, issued):
    return web_host()


def test_placeholder_then_real_certificates_served_by_nginx(deploy, node, issued):
    name, c0, c1 = issued['name'], issued['certs'][0], issued['certs'][1]

    result, res = deploy(node, state='placeholder', names=[name])
    result.assert_ok()
    assert res['changed'] is True and res['placeholder'] is True
    assert res['previous_version'] is None and res['version'].startswith('placeholder-')
    # nginx can start on a fresh host: the placeholder is there before any order.
    node.put_file('/etc/nginx/sites-enabled/tls', TLS_SITE)
    reload_nginx(node)
    expect_served(node, name, res['serial'])
    placeholder = res['version']

    result, res = deploy(node, state='placeholder', names=[name])
    result.assert_ok()
    assert res['changed'] is False and res['version'] == placeholder

    result, res = deploy(node, names=[name], **present(c0))
    result.assert_ok()
    assert res['changed'] is True
    assert (res['previous_version'], res['serial']) == (placeholder, c0['serial'])
    assert live(node) == 'versions/' + res['version']
    reload_nginx(node)
    expect_served(node, name, c0['serial'], issued['roots'])

    # The key is root's alone; the version directory holds the whole unit.
    key = '%s/versions/%s/privkey.pem' % (SITE_DIR, res['version'])
    assert node.exec(['stat', '-c', '%a %U', key]).stdout.split() == ['600', 'root']
    files = node.exec('ls %s/versions/%s' % (SITE_DIR, res['version'])).stdout.split()
    assert sorted(files) == ['cert.pem', 'chain.pem', 'fullchain.pem', 'privkey.pem']
    assert node.get_file('%s/live/fullchain.pem' % SITE_DIR) == c0['cert'] + c0['chain']

    result, res = deploy(node, **present(c0))
    result.assert_ok()
    assert res['changed'] is False and res['serial'] == c0['serial']

    # Check mode reports the switch (and the diff) without touching anything.
    before = (live(node), versions(node))
    result, res = deploy(node, check_mode=True, diff=True, **present(c1))
    result.assert_ok()
    assert res['changed'] is True and res['serial'] == c1['serial']
    assert res['diff']['before'].startswith('live -> versions/') and res['diff']['after'] != res['diff']['before']
    assert (live(node), versions(node)) == before
    # The private key never shows up in what Ansible reports.
    assert c1['key'].strip().splitlines()[1] not in result.stdout


def test_bad_input_is_refused_and_live_left_alone(deploy, node, issued):
    c0, c1 = issued['certs'][0], issued['certs'][1]
    deploy(node, **present(c0))[0].assert_ok()
    before = (live(node), versions(node))

    def refused(expected, **params):
        result, res = deploy(node, **params)
        assert res.get('failed'), result.summary()
        assert expected in res['msg'], res['msg']
        assert (live(node), versions(node)) == before
        leftovers = node.exec('find %s -name ".tmp-*"' % SITE_DIR).stdout
        assert leftovers == '', leftovers

    truncated = c1['cert'][:len(c1['cert']) // 2]
    refused('certificate: the PEM certificate is truncated',
            certificate=truncated, chain=c1['chain'], private_key_content=c1['key'])
    refused('private_key_content: not a readable PEM private key',
            certificate=c1['cert'], chain=c1['chain'], private_key_content=c1['key'][:120])
    refused('private_key_content: the private key does not belong to the certificate',
            certificate=c1['cert'], chain=c1['chain'], private_key_content=c0['key'])
    refused('chain[0]: does not sign the certificate',
            certificate=c1['cert'], chain=c0['cert'], private_key_content=c1['key'])
    refused('names: the certificate (serial %s) does not cover other.example.test' % c1['serial'],
            names=['other.example.test'], **present(c1))
    refused("site: '../etc' is not a valid name", site='../etc', **present(c1))
    refused('version: 20000101000000-0000000000000000 does not exist',
            state='rollback', version='20000101000000-0000000000000000')
    refused('keep_versions: must be at least 1', keep_versions=0, **present(c1))


def test_old_versions_pruned_and_rollback_serves_the_previous_certificate(deploy, node, issued):
    name = issued['name']
    node.put_file('/etc/nginx/sites-enabled/tls', TLS_SITE)
    made = []
    for cert in issued['certs']:
        result, res = deploy(node, keep_versions=2, **present(cert))
        result.assert_ok()
        made.append(res)
    assert versions(node) == sorted([made[1]['version'], made[2]['version']])
    assert made[2]['pruned'] == [made[0]['version']]
    reload_nginx(node)
    expect_served(node, name, issued['certs'][2]['serial'], issued['roots'])

    result, res = deploy(node, state='rollback', version=made[2]['previous_version'], diff=True)
    result.assert_ok()
    assert res['changed'] is True
    assert (res['version'], res['serial']) == (made[1]['version'], issued['certs'][1]['serial'])
    assert res['previous_serial'] == issued['certs'][2]['serial']
    reload_nginx(node)
    expect_served(node, name, issued['certs'][1]['serial'], issued['roots'])

    result, res = deploy(node, state='rollback', version=made[1]['version'])
    result.assert_ok()
    assert res['changed'] is False


def test_switches_under_load_drop_no_request(deploy, node, issued):
    """Requests keep succeeding while versions are switched and nginx reloads after each."""
    certs = issued['certs']
    deploy(node, **present(certs[0]))[0].assert_ok()
    node.put_file('/etc/nginx/sites-enabled/tls', TLS_SITE)
    node.exec('nginx -s reload')
    node.put_file('/usr/local/bin/hammer', textwrap.dedent('''\
        #!/bin/sh
        fails=0; n=0
        while [ ! -e /tmp/hammer.stop ]; do
            n=$((n + 1))
            curl -skf -o /dev/null --resolve %s:443:127.0.0.1 https://%s/ || fails=$((fails + 1))
        done
        echo "$n $fails" > /tmp/hammer.out
        ''') % (issued['name'], issued['name']), mode='0755')
    node.exec('rm -f /tmp/hammer.stop /tmp/hammer.out; (setsid /usr/local/bin/hammer </dev/null >/dev/null 2>&1 &)')
    for cert in certs[1:] + certs[:1] + certs[1:]:
        deploy(node, **present(cert))[0].assert_ok()
        node.exec('nginx -t -q && nginx -s reload')
    node.exec('touch /tmp/hammer.stop; for i in $(seq 100); do [ -s /tmp/hammer.out ] && break; sleep 0.1; done')
    total, failures = (int(v) for v in node.get_file('/tmp/hammer.out').split())
    assert total > 20 and failures == 0, '%d of %d requests failed' % (failures, total)
    expect_served(node, issued['name'], certs[2]['serial'], issued['roots'])
