# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The harness itself: Pebble, its DNS, nginx containers and playbook results are real and usable."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess

import pytest
import requests
from cryptography import x509

import fleetcert_testbed as tb


def curl(*args):
    # --noproxy and explicit CAs: the machine's curl defaults must not matter.
    return subprocess.run(['curl', '--noproxy', '*', '-sS', '-m', '10'] + list(args),
                          capture_output=True, text=True, check=False)


def dig(server, name, rtype='A', tcp=False):
    host, port = server.rsplit(':', 1)
    cmd = ['dig', '+short', '+time=2', '+tries=1', '-p', port, '@' + host, name, rtype]
    if tcp:
        cmd.insert(1, '+tcp')
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()


def test_directory_answers_over_tls_verified_with_ca_path(pebble):
    proc = curl('--cacert', pebble.ca_path, '-o', '-', '-w', '\n%{http_code}', pebble.directory_url)
    assert proc.returncode == 0, proc.stderr
    body, _sep, status = proc.stdout.rpartition('\n')
    assert status == '200'
    directory = json.loads(body)
    assert directory['newOrder'].startswith('https://localhost:%d/' % pebble.port_base)
    assert 'renewalInfo' in directory
    assert set(directory['meta']['profiles']) >= {'classic', 'shortlived'}


def test_directory_is_not_trusted_without_ca_path(pebble):
    # The listener's CA is throwaway: the system store must reject it, so a test
    # that forgets ca_path fails instead of silently passing.
    proc = curl('--cacert', '/etc/ssl/certs/ca-certificates.crt', pebble.directory_url)
    assert proc.returncode == 60, (proc.returncode, proc.stderr)


def test_issuing_roots_are_ca_certificates_distinct_from_the_api_ca(pebble):
    roots = pebble.issuing_roots_pem()
    assert len(roots) >= 1
    certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in roots]
    for cert in certs:
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        assert cert.issuer == cert.subject
    with open(pebble.ca_path, 'rb') as handle:
        api_ca = x509.load_pem_x509_certificate(handle.read())
    assert api_ca.subject not in [c.subject for c in certs]


def test_alternate_roots_are_all_returned(pebble_factory):
    alt = pebble_factory(env={'PEBBLE_ALTERNATE_ROOTS': '2'})
    roots = alt.issuing_roots_pem()
    assert len(roots) == 3
    assert len(set(roots)) == 3


def test_add_a_and_clear_a_drive_the_dns_pebble_uses(pebble):
    name = 'tb-%s.example.test' % os.urandom(4).hex()
    pebble.add_a(name, '10.123.45.67')
    try:
        assert dig(pebble.dns_server, name) == ['10.123.45.67']
        assert dig(pebble.dns_server, name, tcp=True) == ['10.123.45.67']
        # No AAAA answers: Pebble must not try IPv6 first.
        assert dig(pebble.dns_server, name, 'AAAA') == []
    finally:
        pebble.clear_a(name)
    assert dig(pebble.dns_server, name) == ['127.0.0.1']


def test_order_count_counts_new_order_requests(pebble):
    acme = pytest.importorskip('acme.client')
    messages = pytest.importorskip('acme.messages')
    import josepy as jose
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    before = pebble.order_count()
    net = acme.ClientNetwork(jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())),
                             alg=jose.ES256, verify_ssl=pebble.ca_path)
    client = acme.ClientV2(messages.Directory.from_json(net.get(pebble.directory_url).json()), net)
    client.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(2):
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName('o%d.example.test' % i)]), False)
               .sign(key, hashes.SHA256()))
        client.new_order(csr.public_bytes(serialization.Encoding.PEM))
    assert pebble.order_count() == before + 2
    assert pebble.order_requests() >= pebble.order_count()


def test_extra_instance_gets_its_own_ports_and_env(pebble, pebble_factory):
    other = pebble_factory(env={'PEBBLE_WFE_NONCEREJECT': '50'})
    assert other.port_base != pebble.port_base
    assert 'reject 50% of good nonces' in other.log_text()
    resp = requests.Session().get(other.directory_url, verify=other.ca_path, timeout=10)
    assert resp.status_code == 200
    # Each instance has its own throwaway API CA.
    with pytest.raises(requests.exceptions.SSLError):
        requests.Session().get(other.directory_url, verify=pebble.ca_path, timeout=10)


def test_web_host_serves_the_webroot_and_404_elsewhere(web_host):
    web = web_host()
    web.put_file(tb.ACME_WEBROOT + '/.well-known/acme-challenge/tok-123', 'tok-123.thumb')
    web.put_file('/var/www/html/index.html', 'default site')
    proc = curl('-o', '-', '-w', '\n%{http_code}', 'http://%s/.well-known/acme-challenge/tok-123' % web.ip)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == 'tok-123.thumb\n200'
    for path in ('/.well-known/acme-challenge/missing', '/', '/index.html'):
        proc = curl('-o', '/dev/null', '-w', '%{http_code}', 'http://%s%s' % (web.ip, path))
        assert proc.stdout == '404', path


def test_containers_resolve_each_other_by_alias(web_host, container):
    web = web_host(aliases=['app.example.test'])
    web.put_file(tb.ACME_WEBROOT + '/.well-known/acme-challenge/ping', 'pong')
    client = container()
    # aardvark-dns learns a new container's aliases asynchronously; under load
    # (CI) a lookup right after start can fail once. Resolved within 15 s is
    # what the test bed promises.
    resolve = 'for i in $(seq 150); do getent hosts app.example.test && exit 0; sleep 0.1; done; exit 1'
    assert client.exec(resolve, check=False).returncode == 0, 'app.example.test never resolved'
    out = client.exec('curl -sS -m 5 http://app.example.test/.well-known/acme-challenge/ping').stdout
    assert out == 'pong'


def test_exec_reports_failures(container):
    node = container()
    assert node.exec(['sh', '-c', 'exit 3'], check=False).returncode == 3
    with pytest.raises(tb.CommandError) as err:
        node.exec('echo visible-output; exit 1')
    assert 'visible-output' in str(err.value)


@pytest.fixture
def must_be_gone_afterwards():
    """Names that must not exist once the fixtures set up after this one are torn down."""
    names = []
    yield names
    for name in names:
        proc = tb.podman('container', 'exists', name, check=False)
        assert proc.returncode == 1, 'container %s survived its test' % name


def test_containers_are_removed_when_the_test_ends(must_be_gone_afterwards, container):
    node = container()
    must_be_gone_afterwards.append(node.name)
    assert tb.podman('container', 'exists', node.name, check=False).returncode == 0


PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks', 'testbed_probe.yml')


def test_run_playbook_returns_per_task_per_host_results(run_playbook, make_inventory, container):
    nodes = [container(), container()]
    result = run_playbook(PLAYBOOK, inventory=make_inventory({'nodes': nodes}),
                          extra_vars={'probe_marker': '/tmp/probe-marker'})
    assert result.rc == 0, result.summary()
    facts = result.results('Read the os release')
    assert sorted(facts) == sorted(n.name for n in nodes)
    for node in nodes:
        assert facts[node.name]['stdout'].startswith('bookworm')
        assert result.result('Write the marker', node.name)['changed'] is True
        assert node.exec(['cat', '/tmp/probe-marker']).stdout == node.name + '\n'
    controller = result.result('Controller python', 'localhost')
    assert controller['stdout'] == tb.testbed_env()['FLEETCERT_PYTHON']

    again = run_playbook(PLAYBOOK, inventory=make_inventory({'nodes': nodes}),
                         extra_vars={'probe_marker': '/tmp/probe-marker'})
    assert [again.result('Write the marker', n.name)['changed'] for n in nodes] == [False, False]


def test_run_playbook_reports_failure_with_module_result(run_playbook, make_inventory, container):
    node = container()
    result = run_playbook(PLAYBOOK, inventory=make_inventory({'nodes': [node]}),
                          extra_vars={'probe_marker': '/tmp/probe-marker', 'probe_fail': True})
    assert result.rc == 2
    failed = result.result('Fail on request', node.name)
    assert failed['failed'] is True
    assert failed['msg'] == 'probe_fail was set'
    assert result.stats[node.name]['failures'] == 1
    with pytest.raises(KeyError):
        result.results('No such task')


def test_busy_port_base_is_refused_and_skipped(pebble):
    clash = tb.Pebble('pytest-clash', pebble.port_base)
    with pytest.raises(tb.CommandError) as err:
        clash.start()
    assert 'port %d is in use' % pebble.port_base in err.value.stderr
    # The session instance is untouched by the refused start.
    assert requests.Session().get(pebble.directory_url, verify=pebble.ca_path, timeout=10).status_code == 200

    free = pebble.port_base + 4 * 21
    other = tb.start_pebble([pebble.port_base, free], prefix='pytest-clash')
    try:
        assert other.port_base == free
    finally:
        other.stop()
    assert tb.run(['bash', 'scripts/pebble.sh', 'status', '--name', other.name], check=False).returncode == 3


def test_base_image_contract(container):
    node = container()
    # tini is PID 1 so `podman stop` does not wait for a timeout.
    assert node.exec(['cat', '/proc/1/comm']).stdout.strip() == 'tini'
    # Epoch mtime: ansible.builtin.apt's cache_valid_time always updates first.
    assert node.exec(['stat', '-c', '%Y', '/var/lib/apt/lists']).stdout.strip() == '0'
    node.exec(['python3', '-c', 'import apt, cryptography.x509'])
    sources = node.exec(['cat', '/etc/apt/sources.list.d/debian.sources']).stdout
    mirror = tb.run(['bash', '-c', '. scripts/env.sh && fleetcert_debian_mirror']).stdout.strip()
    assert 'URIs: %s\n' % mirror in sources
    stopped = tb.podman('stop', '-t', '10', node.name)
    assert stopped.returncode == 0


def test_nested_podman_runs_the_node_image_in_a_fleet_host(fleet_host):
    host = fleet_host()
    images = host.exec(['podman', 'images', '--format', '{{.Repository}}:{{.Tag}}']).stdout.split()
    assert tb.image('node') in images
    out = host.exec(['podman', 'run', '--rm', tb.image('node'), 'node', '-e',
                     'console.log("node " + process.version)'], timeout=120).stdout
    assert out.startswith('node v')
    # An app image built FROM the node image inside the host, published on loopback.
    host.put_file('/tmp/app/Containerfile',
                  'FROM %s\nCMD ["node", "-e", "require(\\"http\\").createServer((q, r) => '
                  'r.end(\\"app\\")).listen(3000)"]\n' % tb.image('node'))
    host.exec(['podman', 'build', '--pull=never', '-q', '-t', 'localhost/tb-app', '/tmp/app'], timeout=300)
    host.exec(['podman', 'run', '-d', '--name', 'app', '-p', '127.0.0.1:3000:3000', 'localhost/tb-app'])
    answer = host.exec('for i in $(seq 50); do curl -fsS http://127.0.0.1:3000/ && exit 0; sleep 0.2; done; exit 1')
    assert answer.stdout == 'app'
