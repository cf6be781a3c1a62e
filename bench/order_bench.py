# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ordering at protocol speed: fleetcert side by side with certbot, lego and acme.

`make bench-order` runs this (after `make setup`). It starts its own Pebble
(scripts/pebble.sh, instance "bench", ports 14800-14803) and a real nginx in a
podman container (bench-web) serving one webroot, registers one account per
client, then runs --rounds interleaved rounds. In each round every client gets
one certificate for a fresh name (EC P-256), in a rotated order so no client
always runs first. Each run is a subprocess measured by wait4(): wall time,
user+system CPU and peak RSS of the process and its children. The requests
are counted at the CA: Pebble logs one "<METHOD> <route> -> calling handler()"
line per request it serves, and nothing else talks to this instance, so the
lines a run adds to pebble.log are exactly its requests (for our own client
the count is checked against the client's own counter). Every certificate is
checked with openssl (name in the SAN, chain verifies to Pebble's root).

Prints a Markdown table and writes bench/results/ordering.md and .json (and
the per-run data to ordering.raw.json, not committed). Not a CI test: the
numbers depend on the machine and on what else runs on it.
"""

import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'bench')
CACHE = os.path.join(ROOT, '.cache')
WORK = os.path.join(CACHE, 'bench')
BENCH_VENV = os.path.join(CACHE, 'bench-venv')
VENV_PYTHON = os.path.join(CACHE, 'venv', 'bin', 'python')

PEBBLE_NAME = 'bench'
PORT_BASE = 14800
# Deterministic request counts: no rejected nonces (each would add a retry)
# and no reused authorizations (a reused one skips validation). The validation
# delay is off (pebble.sh sets PEBBLE_VA_NOSLEEP=1), as in the issue. Pebble
# sends no Retry-After unless --retry-after asks for it: a CA that says "wait
# a second" makes every polite client wait that second, which hides the
# client's own pace (run with --retry-after 1 to see that case).
PEBBLE_ENV = ('PEBBLE_WFE_NONCEREJECT=0', 'PEBBLE_AUTHZREUSE=0')
CONTAINER = 'bench-web'
DOMAIN = 'bench.test'
STATELESS_DOMAIN = 'stateless.' + DOMAIN
RUN_TIMEOUT = 120
# The machine exports these for every process; a client must be given
# Pebble's CA explicitly, so none of them may leak in from the environment.
CA_ENV_VARS = ('REQUESTS_CA_BUNDLE', 'SSL_CERT_FILE', 'CURL_CA_BUNDLE')
PEBBLE_REQUEST_RE = re.compile(r'^Pebble \S+ \S+ ([A-Z]+) (\S+) -> calling handler\(\)')
TARGET_WALL = 0.7


def log(msg):
    print('bench: %s' % msg, file=sys.stderr, flush=True)


def die(msg):
    log('ERROR: %s' % msg)
    sys.exit(1)


def run(argv, env=None, check=True, timeout=600):
    try:
        result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        die('%s did not finish within %d s' % (' '.join(argv), timeout))
    if check and result.returncode != 0:
        die('%s failed (%d): %s' % (' '.join(argv), result.returncode,
                                    (result.stderr or result.stdout).strip()[-2000:]))
    return result


def project_env():
    """The environment scripts/env.sh sets up, without any CA bundle variable."""
    out = run(['bash', '-c', '. "$1" && env -0', 'env.sh',
               os.path.join(ROOT, 'scripts', 'env.sh')]).stdout
    env = dict(item.split('=', 1) for item in out.split('\0') if '=' in item)
    for name in CA_ENV_VARS:
        env.pop(name, None)
    return env


# ---------------------------------------------------------------------------
# Set-up: peers, Pebble, nginx
# ---------------------------------------------------------------------------

def ensure_prerequisites():
    if os.geteuid() != 0:
        die('run as root (rootful podman, like the test bed)')
    if not os.access(VENV_PYTHON, os.X_OK):
        die('%s is missing: run `make setup` first' % VENV_PYTHON)
    for tool in ('podman', 'openssl', 'pebble'):
        if shutil.which(tool) is None:
            die('%s is not installed: run `make setup` first' % tool)
    if shutil.which('lego') is None:
        # scripts/setup.sh installs it; only a machine set up before it did lacks it.
        log('installing lego (Debian package)')
        run(['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'lego'],
            env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    requirements = os.path.join(BENCH, 'requirements.txt')
    with open(requirements, 'rb') as handle:
        want = hashlib.sha256(handle.read()).hexdigest()
    stamp = os.path.join(BENCH_VENV, '.fleetcert-requirements.sha256')
    try:
        with open(stamp) as handle:
            have = handle.read().strip()
    except OSError:
        have = None
    if have != want:
        log('installing bench/requirements.txt (certbot) into %s' % BENCH_VENV)
        if not os.path.exists(os.path.join(BENCH_VENV, 'bin', 'python')):
            run(['/usr/bin/python3', '-m', 'venv', BENCH_VENV])
        run([os.path.join(BENCH_VENV, 'bin', 'pip'), 'install', '-q',
             '--disable-pip-version-check', '-r', requirements])
        with open(stamp, 'w') as handle:
            handle.write(want + '\n')


class Pebble(object):
    """Our own Pebble instance through scripts/pebble.sh."""

    def __init__(self, env):
        self.env = env
        self.script = os.path.join(ROOT, 'scripts', 'pebble.sh')
        self.args = ['--name', PEBBLE_NAME, '--port-base', str(PORT_BASE)]

    def start(self, retry_after):
        # A fresh CA each time: accounts and authorizations of an earlier run
        # must not make this one cheaper.
        run([self.script, 'stop'] + self.args, env=self.env)
        extra = ['--retry-after', str(retry_after)]
        for item in PEBBLE_ENV:
            extra += ['--env', item]
        run([self.script, 'start'] + self.args + extra, env=self.env)
        out = run(['bash', '-c', '. "$1" && env -0', 'env',
                   os.path.join(CACHE, 'pebble', PEBBLE_NAME, 'env')]).stdout
        values = dict(item.split('=', 1) for item in out.split('\0') if '=' in item)
        self.directory = values['PEBBLE_DIRECTORY']
        self.ca = values['PEBBLE_CA']
        self.mgmt = values['PEBBLE_MGMT']
        self.challtestsrv = values['CHALLTESTSRV_MGMT']
        self.log = values['PEBBLE_LOG']
        context = ssl.create_default_context(cafile=self.ca)
        self.root = os.path.join(WORK, 'pebble-root.pem')
        with urllib.request.urlopen(self.mgmt + '/roots/0', context=context, timeout=10) as resp:
            with open(self.root, 'wb') as handle:
                handle.write(resp.read())

    def stop(self):
        run([self.script, 'stop'] + self.args, env=self.env, check=False)

    def add_a(self, name, address):
        body = json.dumps({'host': name, 'addresses': [address]}).encode()
        request = urllib.request.Request(self.challtestsrv + '/add-a', data=body, method='POST')
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()

    def log_size(self):
        return os.path.getsize(self.log)

    def requests_since(self, offset):
        """Counter of 'METHOD /route' for the requests Pebble served after offset."""
        counts = collections.Counter()
        with open(self.log, 'rb') as handle:
            handle.seek(offset)
            for line in handle.read().decode('utf-8', 'replace').splitlines():
                match = PEBBLE_REQUEST_RE.match(line)
                if match:
                    counts['%s %s' % match.groups()] += 1
        return counts


# Names under STATELESS_DOMAIN get the nginx role's stateless answer
# (roles/nginx/templates/site.conf.j2); every other name is served from the webroot.
STATELESS_CONF = r"""
server {
    listen 80;
    server_name *.%(domain)s;
    location ^~ /.well-known/acme-challenge/ {
        default_type text/plain;
        location ~ "^/\.well-known/acme-challenge/([-_A-Za-z0-9]+)$" {
            default_type text/plain;
            return 200 "$1.%(thumbprint)s";
        }
        return 404;
    }
}
"""


class Nginx(object):
    """nginx in a podman container from the test bed's web image.

    The default server serves WORK/webroot (the webroot clients); names under
    STATELESS_DOMAIN are answered statelessly for one account's thumbprint.
    """

    def __init__(self, env):
        self.env = env
        self.image = env['FLEETCERT_IMAGE_WEB']
        self.webroot = os.path.join(WORK, 'webroot')

    def start(self, thumbprint):
        if run(['podman', 'image', 'exists', self.image], check=False).returncode != 0:
            die('image %s is missing: run `make setup` first' % self.image)
        conf = os.path.join(WORK, 'nginx-stateless.conf')
        with open(conf, 'w') as handle:
            handle.write(STATELESS_CONF % dict(domain=STATELESS_DOMAIN, thumbprint=thumbprint))
        self.stop()
        run(['podman', 'run', '-d', '--rm', '--name', CONTAINER,
             '-v', '%s:/var/www/html:ro' % self.webroot,
             '-v', '%s:/etc/nginx/conf.d/bench-stateless.conf:ro' % conf,
             self.image, 'nginx', '-g', 'daemon off;'])
        self.address = run(['podman', 'inspect', CONTAINER, '--format',
                            '{{.NetworkSettings.IPAddress}}']).stdout.strip()
        if not self.address:
            die('container %s has no IP address' % CONTAINER)
        probe_dir = os.path.join(self.webroot, '.well-known', 'acme-challenge')
        os.makedirs(probe_dir, exist_ok=True)
        with open(os.path.join(probe_dir, 'bench-probe'), 'w') as handle:
            handle.write('bench-probe')
        url = 'http://%s/.well-known/acme-challenge/bench-probe' % self.address
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.read() == b'bench-probe':
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                die('nginx in %s does not serve %s' % (CONTAINER, url))
            time.sleep(0.1)
        os.unlink(os.path.join(probe_dir, 'bench-probe'))
        self.version = run(['podman', 'exec', CONTAINER, 'nginx', '-v']).stderr.strip()

    def stop(self):
        run(['podman', 'rm', '-f', '-t', '0', CONTAINER], check=False)


# ---------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------

class Client(object):
    """One ACME client: how to register it and how to order one certificate."""

    key = label = None
    domain = DOMAIN

    def __init__(self, bench):
        self.bench = bench
        self.home = os.path.join(WORK, self.key)
        os.makedirs(self.home)

    def register(self):
        """Create the account before any measured run (not measured)."""

    def command(self, name, rundir):
        raise NotImplementedError

    def env(self):
        return dict(self.bench.env)

    def certificate(self, name, rundir):
        return os.path.join(rundir, 'out', 'fullchain.pem')

    def own_count(self, stdout):
        """Requests the client counted itself, when it says (a cross-check)."""
        return None

    def extra(self, stdout):
        return {}


class OursClient(Client):
    key = 'ours'
    label = 'fleetcert, module code in-process'
    script = 'order_ours.py'

    def _common(self):
        return [VENV_PYTHON, os.path.join(BENCH, self.script), '--state',
                os.path.join(self.home, 'account.json'), '--directory',
                self.bench.pebble.directory, '--ca', self.bench.pebble.ca]

    def register(self):
        argv = self._common()
        argv.insert(2, 'register')
        self.account = json.loads(run(argv, env=self.env()).stdout.strip().splitlines()[-1])

    def command(self, name, rundir):
        argv = self._common() + ['--name', name, '--webroot', self.bench.nginx.webroot,
                                 '--out', os.path.join(rundir, 'out')]
        argv.insert(2, 'order')
        return argv

    def own_count(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])['requests']

    def extra(self, stdout):
        return {'phases': json.loads(stdout.strip().splitlines()[-1])['phases']}


class PlaybookClient(OursClient):
    """ansible-playbook running the modules: the whole cost a user sees."""

    key = 'play3'
    label = 'fleetcert, ansible-playbook, webroot: 3 tasks'
    playbook = 'order_webroot.yml'

    def register(self):
        super(PlaybookClient, self).register()
        with open(os.path.join(self.home, 'account.json')) as handle:
            self.account.update(json.load(handle))
        self.inventory = os.path.join(self.home, 'inventory')
        with open(self.inventory, 'w') as handle:
            handle.write('localhost ansible_connection=local ansible_python_interpreter=%s\n'
                         % VENV_PYTHON)

    def command(self, name, rundir):
        variables = os.path.join(rundir, 'vars.json')
        with open(variables, 'w') as handle:
            json.dump({
                'bench_directory_url': self.bench.pebble.directory,
                'bench_ca_bundle': self.bench.pebble.ca,
                'bench_account_key_path': self.account['key'],
                'bench_account_uri': self.account['uri'],
                'bench_name': name,
                'bench_webroot': self.bench.nginx.webroot,
                'bench_dest_dir': os.path.join(rundir, 'out'),
            }, handle)
        return [os.path.join(CACHE, 'venv', 'bin', 'ansible-playbook'), '-i', self.inventory,
                os.path.join(BENCH, 'playbooks', self.playbook), '-e', '@' + variables]

    def own_count(self, stdout):
        return None

    def extra(self, stdout):
        return {}


class StatelessPlaybookClient(PlaybookClient):
    key = 'play1'
    label = 'fleetcert, ansible-playbook, stateless: 1 task'
    playbook = 'order_stateless.yml'
    domain = STATELESS_DOMAIN


class CertbotClient(Client):
    key = 'certbot'

    @property
    def label(self):
        return 'certbot %s certonly --webroot' % self.bench.versions['certbot']

    def _common(self, subcommand):
        return [os.path.join(BENCH_VENV, 'bin', 'certbot'), subcommand, '--non-interactive',
                '--server', self.bench.pebble.directory,
                '--config-dir', os.path.join(self.home, 'config'),
                '--work-dir', os.path.join(self.home, 'work'),
                '--logs-dir', os.path.join(self.home, 'logs')]

    def env(self):
        # certbot has no CA option: requests reads this variable.
        return dict(self.bench.env, REQUESTS_CA_BUNDLE=self.bench.pebble.ca)

    def register(self):
        run(self._common('register') + ['--agree-tos', '--register-unsafely-without-email'],
            env=self.env())

    def command(self, name, rundir):
        return self._common('certonly') + [
            '--webroot', '-w', self.bench.nginx.webroot, '-d', name,
            '--key-type', 'ecdsa', '--elliptic-curve', 'secp256r1']

    def certificate(self, name, rundir):
        return os.path.join(self.home, 'config', 'live', name, 'fullchain.pem')


class LegoClient(Client):
    key = 'lego'

    @property
    def label(self):
        return 'lego %s --http.webroot' % self.bench.versions['lego']

    def env(self):
        return dict(self.bench.env, LEGO_CA_CERTIFICATES=self.bench.pebble.ca)

    def command(self, name, rundir):
        # lego has no register-only command: its account is created by the
        # warm-up run, which is not measured.
        return ['lego', '--path', self.home, '--email', 'bench@example.com',
                '--server', self.bench.pebble.directory, '--accept-tos', '--key-type', 'ec256',
                '--http', '--http.webroot', self.bench.nginx.webroot, '-d', name, 'run']

    def certificate(self, name, rundir):
        return os.path.join(self.home, 'certificates', name + '.crt')


class PlainClient(OursClient):
    key = 'plain'
    script = 'order_acme_plain.py'

    @property
    def label(self):
        return 'acme %s ClientV2 defaults' % self.bench.versions['acme']

    def own_count(self, stdout):
        return None

    def extra(self, stdout):
        return {}


CLIENTS = (OursClient, StatelessPlaybookClient, PlaybookClient, CertbotClient, LegoClient,
           PlainClient)


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def measure(argv, env, cwd, stdout, stderr, timeout=RUN_TIMEOUT, watcher=None):
    """Run argv to completion: (exit code, wall s, cpu s, peak RSS KiB).

    In its own session, killed with its children after ``timeout``. CPU and
    peak RSS are what wait4 reports: the process and its reaped children
    (ansible forks). ``watcher`` (e.g. fleet_bench.TreeMemory) gets
    ``watch(pid)`` once the process runs and ``stop()`` when it has ended.
    """
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, start_new_session=True)
    if watcher is not None:
        watcher.watch(proc.pid)
    timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    timer.start()
    try:
        dummy, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.stop()
    wall = time.monotonic() - start
    # wait4 reaped it: tell Popen, or it would wait for a pid that is gone.
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def verify_certificate(path, name, root):
    """openssl agrees: the certificate names ``name`` and chains to Pebble's root."""
    if not os.path.exists(path):
        return 'no certificate at %s' % path
    san = run(['openssl', 'x509', '-in', path, '-noout', '-ext', 'subjectAltName'],
              check=False)
    if 'DNS:%s' % name not in san.stdout.split():
        return 'certificate %s does not name %s: %s' % (path, name, san.stdout.strip())
    verify = run(['openssl', 'verify', '-CAfile', root, '-untrusted', path, path], check=False)
    if verify.returncode != 0:
        return 'certificate %s does not verify: %s' % (path, verify.stdout + verify.stderr)
    return None


class Bench(object):

    def __init__(self, args):
        self.args = args
        self.env = project_env()
        self.pebble = Pebble(self.env)
        self.nginx = Nginx(self.env)
        self.versions = {}
        self.records = []

    def collect_versions(self):
        def dpkg(package):
            return run(['dpkg-query', '-W', '-f=${Version}', package]).stdout.strip()

        def venv_version(python, dist):
            return run([python, '-c', 'import importlib.metadata as m, sys; '
                        'print(m.version(sys.argv[1]))', dist]).stdout.strip()

        self.versions.update(
            pebble=dpkg('pebble'),
            lego=dpkg('lego').split('-')[0],
            certbot=venv_version(os.path.join(BENCH_VENV, 'bin', 'python'), 'certbot'),
            certbot_acme=venv_version(os.path.join(BENCH_VENV, 'bin', 'python'), 'acme'),
            acme=venv_version(VENV_PYTHON, 'acme'),
            josepy=venv_version(VENV_PYTHON, 'josepy'),
            cryptography=venv_version(VENV_PYTHON, 'cryptography'),
            ansible_core=venv_version(VENV_PYTHON, 'ansible-core'),
            python=run([VENV_PYTHON, '-c', 'import platform; print(platform.python_version())'])
            .stdout.strip(),
            nginx=self.nginx.version.split('/')[-1],
            podman=run(['podman', '--version']).stdout.split()[-1],
        )

    def one_run(self, client, label, name):
        rundir = os.path.join(client.home, label)
        os.makedirs(rundir)
        self.pebble.add_a(name, self.nginx.address)
        argv = client.command(name, rundir)
        offset = self.pebble.log_size()
        with open(os.path.join(rundir, 'stdout'), 'wb') as out, \
                open(os.path.join(rundir, 'stderr'), 'wb') as err:
            code, wall, cpu, rss = measure(argv, client.env(), rundir, out, err)
        with open(os.path.join(rundir, 'stdout')) as handle:
            stdout = handle.read()
        if code != 0:
            with open(os.path.join(rundir, 'stderr')) as handle:
                stderr = handle.read()
            die('%s (%s) failed with exit code %d:\n%s\n%s'
                % (client.key, name, code, stdout[-3000:], stderr[-3000:]))
        problem = verify_certificate(client.certificate(name, rundir), name, self.pebble.root)
        if problem:
            die('%s (%s): %s' % (client.key, name, problem))
        requests = self.pebble.requests_since(offset)
        total = sum(requests.values())
        own = client.own_count(stdout)
        if own is not None and own != total:
            die('%s (%s): Pebble logged %d requests, the client counted %d; the count at '
                'the CA is not exact' % (client.key, name, total, own))
        record = dict(client=client.key, name=name, wall=wall, cpu=cpu, rss_kib=rss,
                      requests=total, by_route=dict(requests))
        record.update(client.extra(stdout))
        return record

    def main(self):
        ensure_prerequisites()
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(self.nginx.webroot, mode=0o755)
        load_before = os.getloadavg()
        try:
            log('starting Pebble (instance %s, ports %d-%d) and nginx (%s)'
                % (PEBBLE_NAME, PORT_BASE, PORT_BASE + 3, CONTAINER))
            self.pebble.start(self.args.retry_after)
            clients = [cls(self) for cls in CLIENTS if cls.key in self.args.clients]
            for client in clients:
                client.register()
            stateless = [c for c in clients if c.domain == STATELESS_DOMAIN]
            # Without a stateless client the block still needs a well-formed thumbprint.
            self.nginx.start(stateless[0].account['thumbprint'] if stateless else 'none')
            self.collect_versions()
            for client in clients:
                # Warm-up, not measured: page cache, .pyc files, lego's account.
                self.one_run(client, 'warmup', 'warmup-%s.%s' % (client.key, client.domain))
            log('registered and warmed up: %s' % ', '.join(c.key for c in clients))
            for rnd in range(self.args.rounds):
                shift = rnd % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    name = 'r%d-%s.%s' % (rnd + 1, client.key, client.domain)
                    record = self.one_run(client, 'r%d' % (rnd + 1), name)
                    record['round'] = rnd + 1
                    self.records.append(record)
                    log('round %d/%d %-8s %6.3f s  cpu %5.2f s  %5.1f MiB  %2d requests'
                        % (rnd + 1, self.args.rounds, client.key, record['wall'],
                           record['cpu'], record['rss_kib'] / 1024.0, record['requests']))
        finally:
            self.nginx.stop()
            self.pebble.stop()
        load_after = os.getloadavg()
        summary = self.summarize(clients)
        report = self.report(clients, summary, load_before, load_after)
        print(report)
        self.write(report, summary, load_before, load_after)

    # -- results -------------------------------------------------------------

    def summarize(self, clients):
        summary = collections.OrderedDict()
        for client in clients:
            runs = [r for r in self.records if r['client'] == client.key]
            walls = [r['wall'] for r in runs]
            requests = [r['requests'] for r in runs]
            routes = sorted({route for r in runs for route in r['by_route']})
            entry = collections.OrderedDict(
                label=client.label,
                runs=len(runs),
                wall_median=statistics.median(walls),
                wall_min=min(walls),
                wall_max=max(walls),
                cpu_median=statistics.median(r['cpu'] for r in runs),
                rss_mib_median=statistics.median(r['rss_kib'] for r in runs) / 1024.0,
                requests_median=statistics.median(requests),
                requests_min=min(requests),
                requests_max=max(requests),
                by_route=collections.OrderedDict(
                    (route, statistics.median(r['by_route'].get(route, 0) for r in runs))
                    for route in routes),
            )
            if runs and 'phases' in runs[0]:
                entry['phases_median'] = collections.OrderedDict(
                    (phase, statistics.median(r['phases'][phase] for r in runs))
                    for phase in runs[0]['phases'])
            summary[client.key] = entry
        return summary

    @staticmethod
    def _requests_cell(entry):
        if entry['requests_min'] == entry['requests_max']:
            return '%d' % entry['requests_min']
        return '%g (%d-%d)' % (entry['requests_median'], entry['requests_min'],
                               entry['requests_max'])

    def has_targets(self, summary):
        return not self.args.retry_after and 'ours' in summary and 'certbot' in summary

    def targets(self, summary):
        ours = summary['ours']
        certbot = summary['certbot']
        checks = [
            ('median wall under %.1f s' % TARGET_WALL,
             ours['wall_median'] < TARGET_WALL,
             '%.3f s' % ours['wall_median']),
            ('at most a third of certbot\'s median wall',
             ours['wall_median'] <= certbot['wall_median'] / 3.0,
             '%.3f s vs %.3f s / 3 = %.3f s (%.1fx faster)'
             % (ours['wall_median'], certbot['wall_median'], certbot['wall_median'] / 3.0,
                certbot['wall_median'] / ours['wall_median'])),
            ('no more requests than certbot (medians)',
             ours['requests_median'] <= certbot['requests_median'],
             '%s vs %s' % (self._requests_cell(ours), self._requests_cell(certbot))),
        ]
        return checks

    def report(self, clients, summary, load_before, load_after):
        lines = []
        add = lines.append
        add('## Ordering one certificate: median of %d interleaved runs%s'
            % (self.args.rounds, ', CA sends Retry-After: %d' % self.args.retry_after
               if self.args.retry_after else ''))
        add('')
        add('| client | median wall (s) | min (s) | max (s) | CPU (s) | peak RSS (MiB) '
            '| requests to the CA |')
        add('|---|---:|---:|---:|---:|---:|---:|')
        for key, entry in summary.items():
            add('| %s | %.3f | %.3f | %.3f | %.3f | %.1f | %s |'
                % (entry['label'], entry['wall_median'], entry['wall_min'], entry['wall_max'],
                   entry['cpu_median'], entry['rss_mib_median'], self._requests_cell(entry)))
        add('')
        if self.args.retry_after:
            add('Every client that honours Retry-After waits for it here, so the targets of '
                'issue 6 are checked on the default run without it (ordering.md).')
            add('')
        elif self.has_targets(summary):
            add('Targets for the fleetcert ordering path (module code in-process):')
            add('')
            for what, met, detail in self.targets(summary):
                add('- %s: %s (%s)' % (what, 'met' if met else 'MISSED', detail))
            add('')
        add('### Requests per run, by route (median)')
        add('')
        routes = sorted({route for entry in summary.values() for route in entry['by_route']},
                        key=_route_order)
        add('| route | ' + ' | '.join(summary) + ' |')
        add('|---|' + '---:|' * len(summary))
        for route in routes:
            add('| `%s` | ' % route + ' | '.join(
                '%g' % entry['by_route'].get(route, 0) for entry in summary.values()) + ' |')
        phases = summary.get('ours', {}).get('phases_median')
        if phases:
            add('')
            add('### Where the fleetcert in-process time goes (median, s)')
            add('')
            add('| ' + ' | '.join(phases) + ' | interpreter start and exit |')
            add('|' + '---:|' * (len(phases) + 1))
            rest = summary['ours']['wall_median'] - sum(phases.values())
            add('| ' + ' | '.join('%.3f' % v for v in phases.values()) + ' | %.3f |' % rest)
        add('')
        add('### How it was measured')
        add('')
        add('- Same Pebble %s (PEBBLE_VA_NOSLEEP=1, %s, %s) and the same nginx %s '
            'webroot (podman container) for every client; one fresh name per run, EC P-256 '
            'certificate keys, accounts registered before the runs; one unmeasured '
            'warm-up run per client; rounds rotate the client order.'
            % (self.versions['pebble'], ', '.join(PEBBLE_ENV),
               'Retry-After: %d s on pending authorizations and processing orders'
               % self.args.retry_after if self.args.retry_after else 'no Retry-After',
               self.versions['nginx']))
        add('- Wall, CPU (user+system) and peak RSS per run from wait4() on the client '
            'process, children included (ansible-playbook forks).')
        add('- Requests counted at the CA: the "<METHOD> <route> -> calling handler()" lines '
            'each run added to pebble.log (Pebble logs one per request; nothing else uses '
            'this instance). For the in-process fleetcert client the count equals the '
            "client's own counter in every run.")
        add('- Every certificate checked with openssl: its SAN has the name and it '
            "verifies to Pebble's root.")
        add('- "fleetcert, module code in-process" is bench/order_ours.py: what acme_order '
            'state=valid does (module_utils AcmeClient), with the HTTP-01 file written by '
            "acme_challenge's code; it is given the account URI, as certbot and lego keep "
            'theirs (without it, one more request looks the account up).')
        add('- The ansible-playbook rows are the whole cost a user sees (ansible start-up, '
            'one module process per task): "stateless: 1 task" is '
            'bench/playbooks/order_stateless.yml, acme_order state=valid in one step while '
            "nginx answers <token>.<thumbprint> (the nginx role's stateless mode); "
            '"webroot: 3 tasks" is bench/playbooks/order_webroot.yml, acme_order '
            'state=pending, acme_challenge, acme_order state=valid with order_uri.')
        add('- "acme ClientV2 defaults" is bench/order_acme_plain.py.')
        add('')
        add('### Machine and versions')
        add('')
        add('- Date: %s' % datetime.datetime.now(datetime.timezone.utc)
            .strftime('%Y-%m-%d %H:%M UTC'))
        add('- Machine: %s' % machine_description())
        add('- Load average (1 min) before / after: %.2f / %.2f'
            % (load_before[0], load_after[0]))
        add('- Versions: ' + ', '.join('%s %s' % (k.replace('_', '-'), v)
                                       for k, v in sorted(self.versions.items())))
        return '\n'.join(lines)

    def write(self, report, summary, load_before, load_after):
        results = self.args.results
        os.makedirs(results, exist_ok=True)
        base = os.path.join(results, 'ordering')
        if self.args.retry_after:
            base += '-retry-after-%d' % self.args.retry_after
        with open(base + '.md', 'w') as handle:
            handle.write('# Benchmark: ordering at protocol speed\n\n'
                         'Written by `make bench-order` (bench/order_bench.py); do not edit.\n\n')
            handle.write(report + '\n')
        data = collections.OrderedDict(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            rounds=self.args.rounds,
            machine=machine_description(),
            load_average_before=load_before[0],
            load_average_after=load_after[0],
            pebble_env=['PEBBLE_VA_NOSLEEP=1'] + list(PEBBLE_ENV),
            pebble_retry_after=self.args.retry_after,
            versions=self.versions,
            targets=([dict(target=t, met=m, detail=d) for t, m, d in self.targets(summary)]
                     if self.has_targets(summary) else []),
            clients=summary,
        )
        with open(base + '.json', 'w') as handle:
            json.dump(data, handle, indent=2)
            handle.write('\n')
        with open(base + '.raw.json', 'w') as handle:
            json.dump(self.records, handle, indent=1)
            handle.write('\n')
        log('wrote %s.md, .json and .raw.json' % base)


_ROUTE_ORDER = ('/dir', '/nonce-plz', '/sign-me-up', '/my-account/', '/order-plz', '/authZ/',
                '/chalZ/', '/finalize-order/', '/my-order/', '/certZ/')


def _route_order(route):
    path = route.split(' ', 1)[-1]
    return (_ROUTE_ORDER.index(path) if path in _ROUTE_ORDER else len(_ROUTE_ORDER), route)


def machine_description():
    model = 'unknown CPU'
    with open('/proc/cpuinfo') as handle:
        for line in handle:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    mem_kib = 0
    with open('/proc/meminfo') as handle:
        for line in handle:
            if line.startswith('MemTotal:'):
                mem_kib = int(line.split()[1])
    return '%d cores (%s), %.1f GiB memory, %s' % (
        os.cpu_count(), model, mem_kib / 1024.0 / 1024.0,
        platform.platform(terse=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--rounds', type=int, default=7,
                        help='interleaved rounds; each client orders once per round (default 7)')
    parser.add_argument('--clients', default=','.join(c.key for c in CLIENTS),
                        help='comma-separated subset of %(default)s (profiling; the '
                             'targets need ours and certbot)')
    parser.add_argument('--retry-after', type=int, default=0,
                        help='seconds of Retry-After Pebble sends on pending authorizations '
                             'and processing orders (default 0: none)')
    parser.add_argument('--results', default=os.path.join(BENCH, 'results'),
                        help='where the results go (default bench/results)')
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        parser.error('--rounds: must be from 1 to 50, got %d' % args.rounds)
    if not 0 <= args.retry_after <= 60:
        parser.error('--retry-after: must be from 0 to 60 seconds, got %d' % args.retry_after)
    known = [c.key for c in CLIENTS]
    args.clients = [c.strip() for c in args.clients.split(',') if c.strip()]
    unknown = [c for c in args.clients if c not in known]
    if unknown or not args.clients:
        parser.error('--clients: %s; choose from %s'
                     % ('unknown %s' % ', '.join(unknown) if unknown else 'empty',
                        ', '.join(known)))
    Bench(args).main()


if __name__ == '__main__':
    main()
