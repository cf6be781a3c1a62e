# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-bed helpers for the integration tests: real Pebble, real podman, real ansible-playbook.

The fixtures in conftest.py wrap these; tests normally use the fixtures:

- ``pebble``: a session Pebble instance (``Pebble``), port base from
  ``FLEETCERT_PEBBLE_PORT_BASE`` (default 14500);
- ``pebble_factory(env={...})``: extra instances (e.g. nonce rejection);
- ``podman_network``: one user-created podman network per session;
- ``web_host()`` / ``container(image=...)``: containers on that network;
- ``run_playbook(path, inventory=..., extra_vars=...)`` -> ``PlaybookResult``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import json
import os
import re
import secrets
import shlex
import subprocess
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, 'scripts')
ACME_WEBROOT = '/var/www/acme'

_ENV = None


def testbed_env():
    """The environment scripts/env.sh sets up (venv PATH, ANSIBLE_*, image names)."""
    global _ENV
    if _ENV is None:
        out = subprocess.run(['bash', '-c', '. "$1" >/dev/null && env -0', 'env.sh',
                              os.path.join(SCRIPTS, 'env.sh')],
                             check=True, capture_output=True).stdout
        _ENV = dict(item.split('=', 1) for item in out.decode().split('\0') if '=' in item)
    return dict(_ENV)


def image(kind):
    """Image name by kind: base, node, host, web."""
    return testbed_env()['FLEETCERT_IMAGE_' + kind.upper()]


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message shows what the command printed."""

    def __str__(self):
        return '%s\n--- stdout\n%s\n--- stderr\n%s' % (
            super(CommandError, self).__str__(), self.stdout, self.stderr)


def run(cmd, check=True, input=None, timeout=600, env=None):
    """subprocess.run with text output captured; raises CommandError when check fails."""
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else testbed_env(), check=False)
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def podman(*args, **kwargs):
    return run(['podman'] + [str(a) for a in args], **kwargs)


# ---------------------------------------------------------------- Pebble

class Pebble:
    """One scripts/pebble.sh instance. Ports: N ACME, N+1 mgmt, N+2 DNS, N+3 challtestsrv mgmt."""

    def __init__(self, name, port_base, env=None, eab=None):
        self.name = name
        self.port_base = int(port_base)
        self.extra_env = dict(env or {})
        # External Account Binding keys the CA requires and accepts: {kid: base64url MAC key}.
        self.eab = dict(eab or {})
        self.dir = os.path.join(ROOT, '.cache', 'pebble', name)
        self.env = {}

    def _script(self, action, *extra):
        cmd = ['bash', os.path.join(SCRIPTS, 'pebble.sh'), action, '--name', self.name,
               '--port-base', str(self.port_base)]
        for key, value in sorted(self.extra_env.items()):
            cmd += ['--env', '%s=%s' % (key, value)]
        for kid, mac_key in sorted(self.eab.items()):
            cmd += ['--eab', '%s=%s' % (kid, mac_key)]
        return run(cmd + list(extra), timeout=120)

    def start(self):
        self._script('start')
        self.env = {}
        with open(os.path.join(self.dir, 'env')) as handle:
            for line in handle:
                match = re.match(r"^export ([A-Z_]+)='(.*)'$", line.strip())
                if match:
                    self.env[match.group(1)] = match.group(2)
        return self

    def stop(self):
        self._script('stop')

    @property
    def directory_url(self):
        return self.env['PEBBLE_DIRECTORY']

    @property
    def ca_path(self):
        """CA of Pebble's own HTTPS listeners (ACME API and management), not the issuing CA."""
        return self.env['PEBBLE_CA']

    @property
    def mgmt_url(self):
        return self.env['PEBBLE_MGMT']

    @property
    def challtestsrv_url(self):
        return self.env['CHALLTESTSRV_MGMT']

    @property
    def dns_server(self):
        """host:port of the mock DNS Pebble resolves challenge names with."""
        return self.env['PEBBLE_DNS']

    @property
    def log_path(self):
        return self.env['PEBBLE_LOG']

    def _session(self):
        session = requests.Session()
        # The machine exports REQUESTS_CA_BUNDLE etc.: never let them decide trust.
        session.trust_env = False
        return session

    def _challtestsrv(self, path, payload):
        resp = self._session().post(self.challtestsrv_url + path, data=json.dumps(payload), timeout=10)
        resp.raise_for_status()

    def add_a(self, name, ip):
        """Make Pebble resolve `name` to `ip` (HTTP-01 is then checked on ip:80)."""
        self._challtestsrv('/add-a', {'host': name, 'addresses': [ip]})

    def clear_a(self, name):
        self._challtestsrv('/clear-a', {'host': name})

    def _mgmt_chain(self, kind):
        session = self._session()
        resp = session.get('%s/%s/0' % (self.mgmt_url, kind), verify=self.ca_path, timeout=10)
        resp.raise_for_status()
        pems = [resp.text]
        # requests joins repeated Link headers with ", ".
        links = resp.headers.get('Link', '')
        for url in re.findall(r'<([^>]+)>\s*;\s*rel="alternate"', links):
            alt = session.get(url, verify=self.ca_path, timeout=10)
            alt.raise_for_status()
            pems.append(alt.text)
        return pems

    def issuing_roots_pem(self):
        """PEM of every root Pebble issues under (roots/0 and alternates); new on every start."""
        return self._mgmt_chain('roots')

    def issuing_intermediates_pem(self):
        return self._mgmt_chain('intermediates')

    def write_roots(self, path):
        """Write all issuing roots to `path` (a bundle for curl/openssl -CAfile)."""
        with open(path, 'w') as handle:
            handle.write(''.join(pem if pem.endswith('\n') else pem + '\n'
                                 for pem in self.issuing_roots_pem()))
        return path

    def log_text(self):
        with open(self.log_path) as handle:
            return handle.read()

    def log_window(self):
        """A LogWindow on what this instance logs from now on."""
        return LogWindow(self)

    def order_count(self):
        """Number of orders Pebble created since it started.

        Counts "Added order" lines: a new-order request rejected for a bad nonce
        (Pebble rejects 5% by default) and retried is one order, two POSTs.
        """
        return self.log_text().count('Added order "')

    def order_requests(self):
        """Number of POST /order-plz requests, including rejected ones."""
        return self.log_text().count('POST /order-plz')

    def __repr__(self):
        return 'Pebble(%r, port_base=%d, env=%r, eab=%r)' % (
            self.name, self.port_base, self.extra_env, sorted(self.eab))


class LogWindow(object):
    """The Pebble log lines written after construction (what one step sent)."""

    def __init__(self, pebble):
        self.pebble = pebble
        self.start = len(pebble.log_text())

    def text(self):
        return self.pebble.log_text()[self.start:]

    def count(self, needle):
        return self.text().count(needle)


def start_pebble(port_bases, env=None, taken=(), prefix='pytest', eab=None):
    """Start a Pebble on the first port base of `port_bases` whose ports are free.

    Several checkouts share a machine: another session may already hold a base.
    """
    tried = []
    for base in port_bases:
        if base in taken:
            continue
        instance = Pebble('%s-%d' % (prefix, base), base, env=env, eab=eab)
        try:
            return instance.start()
        except CommandError as err:
            if 'is in use' not in err.stderr:
                raise
            tried.append(base)
    raise AssertionError('no free Pebble port base (tried %r)' % tried)


# ---------------------------------------------------------------- podman

SESSION_LABEL = 'org.fleetcert.test-session'


class Network:
    def __init__(self, name, session_id):
        self.name = name
        self.session_id = session_id

    def create(self):
        podman('network', 'rm', '-f', self.name, check=False)
        podman('network', 'create', '--label', '%s=%s' % (SESSION_LABEL, self.session_id), self.name)
        return self

    def remove(self):
        ids = podman('ps', '-aq', '--filter', 'label=%s=%s' % (SESSION_LABEL, self.session_id)).stdout.split()
        if ids:
            podman('rm', '-f', '-v', '-t', '0', *ids, check=False)
        podman('network', 'rm', '-f', self.name, check=False)


class Container:
    """A running podman container; .exec() runs commands in it."""

    def __init__(self, name, network=None):
        self.name = name
        self.network = network
        self._ip = None

    @property
    def ip(self):
        if self._ip is None:
            info = json.loads(podman('inspect', '--type', 'container', self.name).stdout)[0]
            nets = info['NetworkSettings'].get('Networks') or {}
            if self.network and self.network in nets:
                self._ip = nets[self.network]['IPAddress']
            else:
                self._ip = next(n['IPAddress'] for n in nets.values() if n.get('IPAddress'))
        return self._ip

    def exec(self, cmd, check=True, input=None, user=None, timeout=600):
        """Run `cmd` (a shell string, or an argv list) in the container."""
        argv = ['sh', '-c', cmd] if isinstance(cmd, str) else list(cmd)
        opts = ['-i'] if input is not None else []
        if user:
            opts += ['--user', user]
        return podman('exec', *(opts + [self.name] + argv), check=check, input=input, timeout=timeout)

    def put_file(self, path, content, mode='0644'):
        self.exec('mkdir -p "$(dirname %s)" && cat > %s && chmod %s %s'
                  % ((shlex.quote(path),) * 2 + (mode, shlex.quote(path))), input=content)

    def get_file(self, path):
        return self.exec(['cat', path]).stdout

    def remove(self):
        podman('rm', '-f', '-v', '-t', '0', self.name, check=False)

    def __repr__(self):
        return 'Container(%r)' % self.name


def run_container(name, image_name, network=None, session_id=None, aliases=(), privileged=False,
                  volumes=(), env=None, publish=(), command=(), extra_args=()):
    """podman run -d; the image's default command keeps it alive (tini + sleep)."""
    args = ['run', '-d', '--name', name, '--hostname', name]
    if session_id:
        args += ['--label', '%s=%s' % (SESSION_LABEL, session_id)]
    if network:
        args += ['--network', network]
        for alias in aliases:
            args += ['--network-alias', alias]
    if privileged:
        args.append('--privileged')
    for volume in volumes:
        args += ['-v', volume]
    for key, value in (env or {}).items():
        args += ['-e', '%s=%s' % (key, value)]
    for port in publish:
        args += ['-p', port]
    args += list(extra_args) + [image_name] + list(command)
    podman(*args, timeout=120)
    return Container(name, network)


def image_store_volume():
    """-v value that shows the base and node images to nested podman in a fleet host."""
    return '%s:/var/lib/fleetcert/image-store:ro' % testbed_env()['FLEETCERT_IMAGE_STORE']


NGINX_ACME_SITE = r"""
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name _;
    location ^~ /.well-known/acme-challenge/ {
        root %(webroot)s;
        default_type text/plain;
    }
    location / {
        return 404;
    }
}
"""


def start_web(container, webroot=ACME_WEBROOT):
    """nginx in `container`: /.well-known/acme-challenge/ from `webroot` on port 80, 404 elsewhere."""
    container.put_file('/etc/nginx/sites-enabled/default', NGINX_ACME_SITE % {'webroot': webroot})
    container.exec('mkdir -p %s && nginx -t -q && nginx' % shlex.quote(webroot))
    # nginx daemonizes before it listens: wait for the port.
    deadline = time.time() + 10
    while time.time() < deadline:
        if container.exec('curl -s -o /dev/null http://127.0.0.1/', check=False).returncode == 0:
            return container
        time.sleep(0.1)
    raise AssertionError('nginx in %s does not answer on port 80' % container.name)


# ---------------------------------------------------------------- ansible-playbook

class PlaybookResult:
    """ansible-playbook run with the ansible.posix.json callback.

    .rc/.stdout/.stderr are the raw outcome; .data the parsed JSON; .tasks a list of
    (task name, {host: result}); .results(name) the {host: result} of the first task
    with that name; .stats the per-host recap.
    """

    def __init__(self, rc, stdout, stderr, cmd):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.cmd = cmd
        try:
            self.data = json.loads(stdout)
        except ValueError:
            self.data = None
        self.tasks = []
        for play in (self.data or {}).get('plays', []):
            for task in play.get('tasks', []):
                self.tasks.append((task['task']['name'], task.get('hosts', {})))
        self.stats = (self.data or {}).get('stats', {})

    @property
    def task_names(self):
        return [name for name, _hosts in self.tasks]

    def all_results(self, name):
        """Every {host: result} of tasks named `name`, in run order."""
        return [hosts for task_name, hosts in self.tasks if task_name == name]

    def results(self, name, occurrence=0):
        found = self.all_results(name)
        if len(found) <= occurrence:
            raise KeyError('no task %r (occurrence %d) in the run; tasks: %r\n%s'
                           % (name, occurrence, self.task_names, self.summary()))
        return found[occurrence]

    def result(self, name, host, occurrence=0):
        return self.results(name, occurrence)[host]

    @property
    def failed_tasks(self):
        return [(name, host, res.get('msg')) for name, hosts in self.tasks
                for host, res in hosts.items() if res.get('failed') or res.get('unreachable')]

    def summary(self):
        """Short text for assertion messages."""
        return 'rc=%s cmd=%s\nfailed: %r\nstats: %r\nstderr:\n%s%s' % (
            self.rc, ' '.join(self.cmd), self.failed_tasks, self.stats, self.stderr[-4000:],
            '' if self.data is not None else '\nstdout (not JSON):\n' + self.stdout[-4000:])

    def assert_ok(self):
        assert self.rc == 0, self.summary()
        return self

    def __repr__(self):
        return 'PlaybookResult(rc=%r, tasks=%d)' % (self.rc, len(self.tasks))


def localhost_vars():
    """Inventory vars for localhost: the controller runs modules with the venv python."""
    env = testbed_env()
    return {'ansible_connection': 'local', 'ansible_python_interpreter': env['FLEETCERT_PYTHON']}


def container_vars():
    return {'ansible_connection': 'containers.podman.podman',
            'ansible_python_interpreter': '/usr/bin/python3'}


def make_inventory(groups=None, localhost=True, group_vars=None):
    """Inventory dict: {group: [Container|name, ...]} plus localhost (local, venv python)."""
    inv = {'all': {'hosts': {}, 'children': {}}}
    if localhost:
        inv['all']['hosts']['localhost'] = localhost_vars()
    for group, members in (groups or {}).items():
        hosts = {getattr(m, 'name', m): container_vars() for m in members}
        inv['all']['children'][group] = {'hosts': hosts, 'vars': dict((group_vars or {}).get(group, {}))}
    return inv


def run_playbook(path, inventory=None, extra_vars=None, check_mode=False, diff=False, tags=None,
                 skip_tags=None, limit=None, env=None, timeout=1800, verbosity=0):
    """Run ansible-playbook and return a PlaybookResult (never raises on a failed play).

    inventory: a dict (written to a temp JSON file), a path, or None (localhost only).
    extra_vars: a dict (passed as a temp JSON file).
    """
    run_env = testbed_env()
    run_env.update({'ANSIBLE_STDOUT_CALLBACK': 'ansible.posix.json',
                    'ANSIBLE_LOAD_CALLBACK_PLUGINS': 'True'})
    run_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix='fleetcert-play-') as tmp:
        if inventory is None:
            inventory = make_inventory()
        if isinstance(inventory, dict):
            inv_path = os.path.join(tmp, 'inventory.json')
            with open(inv_path, 'w') as handle:
                json.dump(inventory, handle)
        else:
            inv_path = str(inventory)
        cmd = [os.path.join(run_env['FLEETCERT_VENV'], 'bin', 'ansible-playbook'), '-i', inv_path]
        if extra_vars:
            vars_path = os.path.join(tmp, 'extra_vars.json')
            with open(vars_path, 'w') as handle:
                json.dump(extra_vars, handle)
            cmd += ['-e', '@' + vars_path]
        if check_mode:
            cmd.append('--check')
        if diff:
            cmd.append('--diff')
        if tags:
            cmd += ['--tags', ','.join(tags) if not isinstance(tags, str) else tags]
        if skip_tags:
            cmd += ['--skip-tags', ','.join(skip_tags) if not isinstance(skip_tags, str) else skip_tags]
        if limit:
            cmd += ['--limit', limit]
        if verbosity:
            cmd.append('-' + 'v' * verbosity)
        cmd.append(str(path))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=timeout,
                              cwd=ROOT, check=False)
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, cmd)


# ---------------------------------------------------------------- naming

def new_session_id():
    return secrets.token_hex(3)


_COUNTER = itertools.count(1)


def unique_name(session_id, role):
    """tb-<session>-<role>-<n>: unique per session, easy to find and clean up."""
    return 'tb-%s-%s-%d' % (session_id, role, next(_COUNTER))
