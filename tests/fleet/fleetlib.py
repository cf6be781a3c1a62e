# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A local fleet (scripts/fleet.sh) driven from Python: tests/fleet and bench/fleet_bench.py.

Everything real: the nodes are the fleet's podman containers, the CA is the
fleet's Pebble, playbooks are the collection's own (playbooks/*.yml) run with
ansible-playbook, TLS is checked with Python's ssl against Pebble's issuing
root. The inventory is written from demo/group_vars/web.yml (what a deployment
sets) with only the fleet-specific values replaced.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))

import fleetcert_testbed as tb  # noqa: E402  (the test bed's helpers: one way to run things)

FLEET_SH = os.path.join(ROOT, 'scripts', 'fleet.sh')
PLAYBOOKS = os.path.join(ROOT, 'playbooks')
LOADGEN = os.path.join(ROOT, 'tools', 'loadgen.py')
SITE = 'app'
# The nodes are reached with tests/fleet/plugins/connection/fleet_podman.py:
# containers.podman.podman with pipelining (one `podman exec -i` per module,
# as SSH pipelining does on a real fleet) instead of six podman processes.
CONNECTION_PLUGINS = os.path.join(ROOT, 'tests', 'fleet', 'plugins', 'connection')
NODE_VARS = {'ansible_connection': 'fleet_podman', 'ansible_pipelining': True}


def playbook_env(forks=None):
    """Environment for ansible-playbook on a fleet inventory (the connection plugin)."""
    env = {'ANSIBLE_CONNECTION_PLUGINS': CONNECTION_PLUGINS}
    if forks:
        env['ANSIBLE_FORKS'] = str(forks)
    return env


class Fleet(object):
    """scripts/fleet.sh --name NAME: nodes, load balancer, Pebble, inventory."""

    def __init__(self, name='proof', nodes=3, port_base=14900, domain='app.proof.test',
                 extra_vars=None):
        self.name = name
        self.node_count = nodes
        self.port_base = port_base
        self.domain = domain
        self.extra_vars = dict(extra_vars or {})
        self.state = os.path.join(ROOT, '.cache', 'fleet', name)
        self.work = os.path.join(ROOT, '.cache', 'fleet-%s-work' % name)
        self.env = {}
        self.cert_root = '/etc/fleetcert/certs'
        self.webroot = '/var/lib/fleetcert/acme'

    # ------------------------------------------------------------ lifecycle

    def sh(self, action, check=True, timeout=900):
        cmd = ['bash', FLEET_SH, action, '--name', self.name, '--nodes', str(self.node_count),
               '--port-base', str(self.port_base), '--domain', self.domain]
        return tb.run(cmd, check=check, timeout=timeout)

    def up(self):
        # site.yml deploys the stand-in Meteor bundle; a fresh clone has none yet.
        tb.run(['bash', os.path.join(ROOT, 'scripts', 'make-bundle.sh')])
        self.sh('up')
        self.load_env()
        os.makedirs(self.work, exist_ok=True)
        self.write_inventory()
        return self

    def down(self):
        self.sh('down', check=False)

    def load_env(self):
        self.env = {}
        with open(os.path.join(self.state, 'env')) as handle:
            for line in handle:
                match = re.match(r"^export ([A-Z_]+)='(.*)'$", line.strip())
                if match:
                    self.env[match.group(1)] = match.group(2)

    @property
    def pebble_name(self):
        return 'fleet-%s' % self.name

    @property
    def lb_ip(self):
        return self.env['FLEET_LB_IP']

    @property
    def nodes(self):
        out = tb.podman('ps', '-a', '--filter', 'label=org.fleetcert.fleet=%s' % self.name,
                        '--filter', 'label=org.fleetcert.role=web', '--format', '{{.Names}}').stdout
        return sorted(out.split(), key=lambda n: int(n.rsplit('web', 1)[1]))

    def node_ip(self, node):
        return tb.Container(node, 'fleet-%s' % self.name).ip

    # ------------------------------------------------------------ Pebble

    def pebble(self, env=None):
        """The fleet's Pebble as a test-bed object (restarts it if env differs)."""
        return tb.Pebble(self.pebble_name, self.port_base, env=env)

    def restart_pebble(self, env=None):
        """(Re)start the fleet's CA with Pebble settings `env`; a new CA, so new roots.

        Pebble keeps nothing across a restart: the A record the fleet needs is
        set again (fleet.sh up does the same for the default settings).
        """
        pebble = self.pebble(env)
        pebble.stop()
        pebble.start()
        pebble.add_a(self.domain, self.lb_ip)
        return pebble

    def stop_pebble(self):
        self.pebble().stop()

    def pebble_running(self):
        return tb.run(['bash', os.path.join(ROOT, 'scripts', 'pebble.sh'), 'status', '--name',
                       self.pebble_name, '--port-base', str(self.port_base)],
                      check=False).returncode == 0

    def orders(self):
        """ACME orders this Pebble instance created (its log: one 'Added order' per order).

        Not 'POST /order-plz': a new-order request rejected for a bad nonce
        (Pebble rejects 5% by default) is logged too, and creates no order.
        """
        with open(self.env['FLEET_PEBBLE_LOG']) as handle:
            return count_orders(handle.read())

    def issuing_root(self):
        """Path of Pebble's current issuing roots (they change on every Pebble start)."""
        pebble = self.pebble()
        pebble.env = _pebble_env(pebble)
        return pebble.write_roots(os.path.join(self.work, 'issuing-roots.pem'))

    # ------------------------------------------------------------ inventory + playbooks

    def group_vars(self):
        with open(os.path.join(ROOT, 'demo', 'group_vars', 'web.yml')) as handle:
            values = yaml.safe_load(handle)
        cache = os.path.join(ROOT, '.cache')
        values.pop('fleet_demo_cache', None)
        values.update({
            'nginx_server_names': [self.domain],
            'meteor_domains': [self.domain],
            'meteor_bundle': os.path.join(cache, 'meteor-bundle.tar.gz'),
            'fleetcert_acme_directory_url': self.env['FLEET_DIRECTORY'],
            'fleetcert_acme_ca_bundle': self.env['FLEET_ACME_CA'],
            'fleetcert_acme_account_key_path': self.env['FLEET_ACCOUNT_KEY'],
            # A fixed lifetime (Pebble picks a random profile otherwise), so
            # "not due" is stable across the runs of a session.
            'fleetcert_acme_profile': 'classic',
        })
        values.update(self.extra_vars)
        return values

    def write_inventory(self):
        inventory = tb.make_inventory({'web': self.nodes}, group_vars={'web': self.group_vars()})
        for node_vars in inventory['all']['children']['web']['hosts'].values():
            node_vars.update(NODE_VARS)
        self.inventory = os.path.join(self.work, 'inventory.json')
        with open(self.inventory, 'w') as handle:
            json.dump(inventory, handle, indent=1)
        return self.inventory

    def playbook(self, name, extra_vars=None, forks=None, timeout=1200, limit=None):
        """Run playbooks/<name>.yml on the fleet; a tb.PlaybookResult (JSON callback)."""
        env = playbook_env(forks or max(5, self.node_count))
        return tb.run_playbook(os.path.join(PLAYBOOKS, name + '.yml'), inventory=self.inventory,
                               extra_vars=extra_vars, env=env, timeout=timeout, limit=limit)

    def start_playbook(self, name, extra_vars=None, forks=None, log=None):
        """Start playbooks/<name>.yml in its own session (killable as a group); a Popen.

        Default callback, output to `log` (a path): what an operator would see.
        """
        env = tb.testbed_env()
        env.update(playbook_env(forks or max(5, self.node_count)))
        cmd = [os.path.join(env['FLEETCERT_VENV'], 'bin', 'ansible-playbook'), '-i', self.inventory]
        if extra_vars:
            path = os.path.join(self.work, 'extra-vars-%d.json' % time.time_ns())
            with open(path, 'w') as handle:
                json.dump(extra_vars, handle)
            cmd += ['-e', '@' + path]
        cmd.append(os.path.join(PLAYBOOKS, name + '.yml'))
        out = open(log or os.devnull, 'wb')
        try:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    # ------------------------------------------------------------ node state

    def exec(self, node, cmd, check=True):
        return tb.Container(node).exec(cmd, check=check)

    def tree(self, node):
        """The node's certificate tree: {'live': version, 'files': {relpath: sha256}}.

        Equal trees before and after a step mean nothing on the node changed.
        """
        site = '%s/%s' % (self.cert_root, SITE)
        out = self.exec(node, 'cd %s 2>/dev/null || exit 0; readlink live || true; '
                              'find . -type f -print0 | sort -z | xargs -0r sha256sum'
                        % shlex.quote(site)).stdout.splitlines()
        live = os.path.basename(out[0]) if out and '  ' not in out[0] else ''
        files = dict(reversed(line.split('  ', 1)) for line in out if '  ' in line)
        return {'live': live, 'files': files}

    def challenge_files(self, node):
        out = self.exec(node, 'ls -A %s/.well-known/acme-challenge 2>/dev/null || true'
                        % shlex.quote(self.webroot)).stdout
        return out.split()

    def live_pair(self, node):
        """(fullchain PEM, private key PEM) nginx would load from `live` now."""
        site = '%s/%s/live' % (self.cert_root, SITE)
        return (self.exec(node, ['cat', site + '/fullchain.pem']).stdout,
                self.exec(node, ['cat', site + '/privkey.pem']).stdout)

    def nginx_pids(self, node):
        """{'master': pid, 'workers': sorted pids}: a reload replaces the workers."""
        out = self.exec(node, "ps -eo pid=,args= | grep '[n]ginx:' || true").stdout
        master, workers = None, []
        for line in out.splitlines():
            pid, args = line.strip().split(None, 1)
            if 'master process' in args:
                master = int(pid)
            elif 'worker process' in args and 'shutting down' not in args:
                workers.append(int(pid))
        return {'master': master, 'workers': sorted(workers)}

    def served(self, address, cafile=None, port=443):
        """What `address` serves for the fleet's name: serial, verification, chain length."""
        return served_certificate(address, self.domain, cafile, port)

    def served_by_nodes(self, cafile=None):
        return {node: self.served(self.node_ip(node), cafile) for node in self.nodes}


def _pebble_env(pebble):
    env = {}
    with open(os.path.join(pebble.dir, 'env')) as handle:
        for line in handle:
            match = re.match(r"^export ([A-Z_]+)='(.*)'$", line.strip())
            if match:
                env[match.group(1)] = match.group(2)
    return env


def served_certificate(address, name, cafile=None, port=443, timeout=10):
    """What openssl s_client sees at `address`:`port` with SNI `name`.

    serial and public_key of the leaf, chain: number of certificates sent,
    verified: the chain verifies to `cafile` (only) for `name`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cmd = ['openssl', 's_client', '-connect', '%s:%d' % (address, port), '-servername', name,
           '-showcerts', '-verify_hostname', name, '-no-CApath', '-no-CAstore']
    cmd += ['-CAfile', cafile] if cafile else ['-no-CAfile']
    proc = subprocess.run(cmd, input='', capture_output=True, text=True, timeout=timeout, check=False,
                          env=tb.testbed_env())
    pems = re.findall(r'-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----', proc.stdout, re.S)
    if not pems:
        raise AssertionError('no certificate from %s:%d (%s)' % (address, port, proc.stderr.strip()[-300:]))
    cert = x509.load_pem_x509_certificate(pems[0].encode())
    code = re.search(r'Verify return code: (\d+) \(([^)]*)\)', proc.stdout)
    protocol = re.search(r'^\s*Protocol\s*:\s*(\S+)', proc.stdout, re.M)
    result = {
        'address': address,
        'serial': format(cert.serial_number, 'x'),
        'public_key': cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        'chain': len(pems),
        'tls': protocol.group(1) if protocol else None,
    }
    if cafile:
        result['verified'] = bool(code) and code.group(1) == '0'
        result['verify_result'] = code.group(0) if code else proc.stderr.strip()[-300:]
    return result


def count_orders(pebble_log):
    return len(re.findall(r'^Pebble \S+ \S+ Added order "', pebble_log, re.M))


def key_matches(fullchain_pem, key_pem):
    """The first certificate of fullchain_pem belongs to key_pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(fullchain_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def serial_of_pem(pem):
    from cryptography import x509
    return format(x509.load_pem_x509_certificate(pem.encode()).serial_number, 'x')


def wait_for(predicate, timeout, interval=0.05, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError('timed out after %.0f s waiting for %s' % (timeout, what))


def kill_group(proc, sig=signal.SIGKILL):
    """Kill a Popen started with start_new_session (ansible-playbook and its forks)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=os.path.join(ROOT, '.cache'))


# ---------------------------------------------------------------- load during a renewal

class Load(object):
    """tools/loadgen.py in a subprocess, aimed at the fleet's load balancer."""

    def __init__(self, fleet, cafile, out, duration=300, **options):
        self.fleet = fleet
        self.out = out
        self.stop_file = out + '.stop'
        for path in (out, self.stop_file):
            if os.path.exists(path):
                os.remove(path)
        env = tb.testbed_env()
        cmd = [env['FLEETCERT_PYTHON'], LOADGEN, '--address', fleet.lb_ip, '--name', fleet.domain,
               '--cafile', cafile, '--out', out, '--stop-file', self.stop_file,
               '--duration', str(duration)]
        for key, value in sorted(options.items()):
            cmd += ['--' + key.replace('_', '-'), str(value)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self, timeout=60):
        with open(self.stop_file, 'w'):
            pass
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
        if self.proc.returncode != 0:
            raise AssertionError('loadgen failed (%s): %s %s' % (self.proc.returncode, stdout, stderr[-2000:]))
        with open(self.out) as handle:
            return json.load(handle)


def renewal_under_load(fleet, work, before=6.0, after=8.0, forks=None, **load_options):
    """A forced renewal (certificates.yml) while tools/loadgen.py runs through the load balancer.

    Returns a dict: playbook (tb.PlaybookResult), old/new serial, marks
    (start: playbook started; switched: every node answered with the new
    serial, checked node by node after the playbook, whose reloads had all
    completed), data (raw loadgen records) and summary (loadgen.summarize).
    """
    sys.path.insert(0, os.path.dirname(LOADGEN))
    import loadgen  # noqa: E402  (tools/ is not a package)

    root = fleet.issuing_root()
    old = {n: s['serial'] for n, s in fleet.served_by_nodes(root).items()}
    load = Load(fleet, root, os.path.join(work, 'load.json'), **load_options)
    try:
        time.sleep(before)
        if load.proc.poll() is not None:
            raise AssertionError('loadgen exited early: %s' % (load.proc.communicate(),))
        start = time.time()
        result = fleet.playbook('certificates', extra_vars={'fleetcert_force_renew': True}, forks=forks)
        ended = time.time()
        new_serials = {}
        if result.rc == 0:
            live = {n: serial_of_pem(fleet.live_pair(n)[0]) for n in fleet.nodes}
            for node in fleet.nodes:
                ip = fleet.node_ip(node)
                wait_for(lambda: fleet.served(ip, root)['serial'] == live[node], 30,
                         what='%s to serve %s' % (node, live[node]))
                new_serials[node] = live[node]
        switched = time.time()
        time.sleep(after)
    finally:
        data = load.stop()
    marks = {'start': start, 'playbook_ended': ended, 'switched': switched}
    return {
        'playbook': result,
        'old_serials': old,
        'new_serials': new_serials,
        'marks': marks,
        'data': data,
        'summary': loadgen.summarize(data, marks),
    }


def load_table(summary):
    """Markdown table: requests and latency per phase."""
    lines = ['| phase | requests | failed | keep-alive retries | p50 ms | p99 ms | max ms | serials served |',
             '|---|---:|---:|---:|---:|---:|---:|---|']
    for name, phase in summary['phases'].items():
        lines.append('| %s | %d | %d | %d | %s | %s | %s | %s |' % (
            name, phase['requests'], phase['failed'], phase['keepalive_retries'], phase['p50_ms'],
            phase['p99_ms'], phase['max_ms'],
            ', '.join('%s (%d)' % item for item in sorted(phase['serials'].items()))))
    return '\n'.join(lines)


class Mounts(object):
    """Host-side paths of the nodes' filesystems (podman mount), to watch them cheaply.

    Watching through `podman exec` costs ~0.2 s per look; a kill "in the middle
    of the fan-out" needs to see a switch within milliseconds.
    """

    def __init__(self, fleet):
        self.fleet = fleet
        self.paths = {}

    def __enter__(self):
        for node in self.fleet.nodes:
            self.paths[node] = tb.podman('mount', node).stdout.strip()
        return self

    def __exit__(self, *exc):
        for node in self.paths:
            tb.podman('unmount', node, check=False)

    def live(self, node):
        try:
            return os.path.basename(os.readlink(os.path.join(
                self.paths[node], self.fleet.cert_root.lstrip('/'), SITE, 'live')))
        except OSError:
            return ''

    def challenges(self, node):
        try:
            return os.listdir(os.path.join(self.paths[node], self.fleet.webroot.lstrip('/'),
                                           '.well-known', 'acme-challenge'))
        except OSError:
            return []
