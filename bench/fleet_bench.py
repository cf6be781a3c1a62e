# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet benchmark: the certificate playbooks on fleets of N nodes, next to certbot per node.

`make bench-fleet` runs this (after `make setup`). Not a CI test: the numbers
depend on the machine and on what else runs on it.

1. Renewal under load (3 nodes, the full fleet of site.yml: nginx + the
   stand-in Meteor app in nested podman): tools/loadgen.py through the load
   balancer during a forced renewal; requests and p50/p99 latency before,
   during and after (tests/fleet/fleetlib.renewal_under_load, as the test).
2. For each N (default 3, 10, 25): a fresh local fleet of N nodes
   (scripts/fleet.sh, name "proofb", Pebble ports 14904-14907) with nginx only
   (the fleetcert.meteor.nginx role, no app: the certificate path does not
   touch the app, and N privileged hosts each running an app would not fit in
   2 cores), then, measured:
     fresh     certificates.yml on nodes that only have the placeholder;
     renewal   certificates.yml -e fleetcert_force_renew=true (the order and
               fan-out path of a due renewal, without the CA's ARI check);
     no-op     renew.yml when nothing is due (the daily run);
     certbot   the per-node way: certbot once per node (N processes at once,
               each with its own account, as N servers' timers would), HTTP-01
               through the load balancer with the token put on every node (a
               shared webroot, the usual way to run certbot behind a load
               balancer). Ordering only: no install or reload is counted, so
               this is a lower bound for the per-node way.
   Wall time, ACME orders counted at the CA (Pebble's log: one "Added order"
   line per order created), controller peak memory (sum of the resident
   memory of ansible-playbook and every process it started, sampled every
   0.1 s) and, from the JSON callback's task times, the order phase (account
   to finalization) and the fan-out phase (first switch to last reload).
   Pebble: PEBBLE_VA_NOSLEEP=1 (pebble.sh), no nonce rejection and no
   authorization reuse, so every order is validated and counts are exact.

The nodes are reached the way the fleet tests reach them (tests/fleet/fleetlib.py):
the connection plugin tests/fleet/plugins/connection/fleet_podman.py, which is
containers.podman.podman with pipelining (one `podman exec -i` per module, as
SSH pipelining on a real fleet). Runs before 2026-12-05 used
containers.podman.podman itself (six podman processes per module); EARLIER
below keeps their numbers for comparison.

Writes bench/results/fleet.md, fleet.json and fleet.png (time vs N), and
fleet.raw.json (not committed). Forks: N (every node at once; --forks to
change). The fleets are removed at the end (--keep to look at the last one).
"""

from __future__ import absolute_import, division, print_function

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'bench')
RESULTS = os.path.join(BENCH, 'results')
WORK = os.path.join(ROOT, '.cache', 'fleet-bench')
PLOT_VENV = os.path.join(ROOT, '.cache', 'plot-venv')
# Pinned: the plot is drawn in its own venv, never in the test venv.
PLOT_REQUIREMENTS = (
    'matplotlib==3.11.2', 'numpy==2.4.6', 'pillow==13.0.0', 'contourpy==1.3.3', 'cycler==0.12.1',
    'fonttools==4.68.0', 'kiwisolver==1.5.1', 'packaging==26.4', 'pyparsing==3.3.3',
    'python-dateutil==4.0.0',
)
FLEET_NAME = 'proofb'
PORT_BASE = 14904
DOMAIN = 'app.proofb.test'
PEBBLE_ENV = {'PEBBLE_WFE_NONCEREJECT': '0', 'PEBBLE_AUTHZREUSE': '0'}
RUN_TIMEOUT = 1200
TARGET_NOOP_25 = 30.0
# Earlier results, for comparison: git b20b114 (containers.podman.podman
# without pipelining, inspection with cert_info + stat, every skipped step a
# task) and git be0916d (inspection with an inline raw script).
EARLIER = (
    'Previous run (git b20b114, 2026-12-04 21:42-22:08 UTC, load average 3-43 from other runs on '
    'the same 2 cores; nodes reached with containers.podman.podman, no pipelining; inspection '
    'with cert_info + stat, each skipped step its own task): no-op daily run 6.5 s at N=3, '
    '25.0 s at N=10, 43.8 s at N=25; renewal fan-out 8.2 s at N=3, 31.6 s at N=10, 69.2 s at N=25; '
    'fresh issuance 22.1 / 87.3 / 169.5 s; forced renewal 24.2 / 94.6 / 180.1 s.\n\n'
    'Run before (git be0916d, 2026-12-04 23:41-23:59 UTC, another machine of this kind: AMD '
    'EPYC, 2 cores; inspection read the served serial and the challenge files with one inline '
    '`raw` script, challenge files purged only when some were found): no-op daily run 2.4 s at '
    'N=3, 5.3 s at N=10, 12.2 s at N=25; renewal fan-out 2.9 / 8.8 / 22.8 s; fresh issuance '
    '10.7 / 28.1 / 67.8 s; forced renewal 10.6 / 26.9 / 65.3 s. The run of git 1575ee6 '
    '(2026-12-05 03:21 UTC, Intel Xeon, 2 cores) was 10-25 % slower on the ordering runs and '
    'its no-op run grew more (12.2 to 19.0 s at N=25): from that commit on, every run also '
    'purges leftover challenge files on every node, one module more per node (not measured on '
    'its own).')

sys.path.insert(0, os.path.join(ROOT, 'tests', 'fleet'))
sys.path.insert(0, BENCH)
import fleetlib  # noqa: E402  (tests/fleet: the fleet harness the tests use)
import order_bench  # noqa: E402  (bench/: certbot's venv, the one way to get it)

tb = fleetlib.tb

NGINX_ONLY = """---
- name: nginx only, for the certificate benchmark
  hosts: web
  gather_facts: true
  roles:
    - role: fleetcert.meteor.nginx
"""

# Phases from the JSON callback: (name, first task contains, last task contains).
PHASES = (
    ('order', ('Register or find the ACME account', 'Open the order'),
     ('Answer the challenges and finalize the order',)),
    ('fanout', ('Switch the site to the new certificate version',), ('Reload nginx gracefully',)),
)


def log(msg):
    print('fleet-bench: %s' % msg, file=sys.stderr, flush=True)


def die(msg):
    log('ERROR: %s' % msg)
    sys.exit(1)


# ---------------------------------------------------------------------------
# Measuring one run
# ---------------------------------------------------------------------------

def _children():
    """{ppid: [pid, ...]} of every process now."""
    tree = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kib(pid):
    try:
        with open('/proc/%d/statm' % pid) as handle:
            return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024
    except (OSError, ValueError, IndexError):
        return 0


class TreeMemory(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants (an order_bench.measure watcher)."""

    def __init__(self, interval=0.1):
        super(TreeMemory, self).__init__(daemon=True)
        self.pid = None
        self.interval = interval
        self.peak_kib = 0
        self.done = threading.Event()

    def watch(self, pid):
        self.pid = pid
        self.start()

    def stop(self):
        self.done.set()
        self.join()

    def run(self):
        while not self.done.is_set():
            tree = _children()
            todo, total = [self.pid], 0
            while todo:
                pid = todo.pop()
                total += _rss_kib(pid)
                todo.extend(tree.get(pid, ()))
            self.peak_kib = max(self.peak_kib, total)
            self.done.wait(self.interval)


def run_measured(argv, env, out_path):
    """Run argv: (rc, wall s, peak tree RSS KiB, largest single RSS KiB from wait4)."""
    memory = TreeMemory()
    with open(out_path, 'wb') as out:
        rc, wall, dummy, maxrss = order_bench.measure(argv, env, ROOT, out, subprocess.STDOUT,
                                                      timeout=RUN_TIMEOUT, watcher=memory)
    return rc, wall, memory.peak_kib, maxrss


def _ts(value):
    # isoformat() leaves out the microseconds when they are zero.
    fmt = '%Y-%m-%dT%H:%M:%S.%fZ' if '.' in value else '%Y-%m-%dT%H:%M:%SZ'
    return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def phase_times(data):
    """{phase: seconds} from the ansible.posix.json output (task start/end times)."""
    tasks = []
    for play in (data or {}).get('plays', []):
        for task in play.get('tasks', []):
            info = task['task']
            if info.get('duration', {}).get('start') and info['duration'].get('end'):
                tasks.append((info['name'], _ts(info['duration']['start']), _ts(info['duration']['end'])))
    out = {}
    for name, firsts, lasts in PHASES:
        starts = [s for n, s, _e in tasks if any(f in n for f in firsts)]
        ends = [e for n, _s, e in tasks if any(last in n for last in lasts)]
        out[name] = round(max(ends) - min(starts), 2) if starts and ends else None
    return out


class Bench(object):

    def __init__(self, args):
        self.args = args
        self.env = tb.testbed_env()
        self.records = []
        self.load = None
        self.versions = {}
        self.fleet = None

    # -- fleets ---------------------------------------------------------------

    def fresh_fleet(self, nodes, app=False):
        if self.fleet is not None:
            self.fleet.down()
        fleet = fleetlib.Fleet(name=FLEET_NAME, nodes=nodes, port_base=PORT_BASE, domain=DOMAIN)
        fleet.down()
        self.fleet = fleet.up()
        fleet.restart_pebble(PEBBLE_ENV)
        forks = self.forks(nodes)
        if app:
            result = fleet.playbook('site', forks=forks)
        else:
            path = os.path.join(WORK, 'nginx-only.yml')
            with open(path, 'w') as handle:
                handle.write(NGINX_ONLY)
            result = tb.run_playbook(path, inventory=fleet.inventory, timeout=RUN_TIMEOUT,
                                     env=fleetlib.playbook_env(forks))
        if result.rc != 0:
            die('setting up the %d-node fleet failed:\n%s' % (nodes, result.summary()))
        return fleet

    def forks(self, nodes):
        return nodes if self.args.forks == 'n' else int(self.args.forks)

    # -- one measured playbook run ------------------------------------------

    def playbook_run(self, fleet, label, playbook, extra_vars=None):
        nodes = len(fleet.nodes)
        env = dict(self.env, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
                   ANSIBLE_LOAD_CALLBACK_PLUGINS='True', **fleetlib.playbook_env(self.forks(nodes)))
        argv = [os.path.join(self.env['FLEETCERT_VENV'], 'bin', 'ansible-playbook'), '-i', fleet.inventory]
        if extra_vars:
            argv += ['-e', json.dumps(extra_vars)]
        argv.append(os.path.join(ROOT, 'playbooks', playbook + '.yml'))
        out = os.path.join(WORK, '%s-n%d.json' % (label, nodes))
        orders = fleet.orders()
        rc, wall, peak, maxrss = run_measured(argv, env, out)
        with open(out) as handle:
            try:
                data = json.load(handle)
            except ValueError:
                data = None
        if rc != 0:
            die('%s on %d nodes failed (rc %d), output in %s' % (label, nodes, rc, out))
        root = fleet.issuing_root()
        served = fleet.served_by_nodes(root)
        serials = {s['serial'] for s in served.values()}
        if len(serials) != 1 or not all(s['verified'] for s in served.values()):
            die('%s on %d nodes: the nodes do not all serve one verified certificate: %s'
                % (label, nodes, {n: (s['serial'], s.get('verified')) for n, s in served.items()}))
        record = dict(kind='fleetcert', run=label, nodes=nodes, forks=self.forks(nodes),
                      wall=round(wall, 2), orders=fleet.orders() - orders,
                      peak_tree_rss_mib=round(peak / 1024.0, 1),
                      max_process_rss_mib=round(maxrss / 1024.0, 1),
                      serial=serials.pop())
        record.update(phase_times(data))
        log('%(run)s on %(nodes)d nodes: %(wall).1f s, %(orders)d order(s), peak %(peak_tree_rss_mib).0f MiB'
            % record)
        self.records.append(record)
        return record

    # -- certbot per node -----------------------------------------------------

    def certbot_per_node(self, fleet):
        nodes = fleet.nodes
        home = os.path.join(WORK, 'certbot-n%d' % len(nodes))
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(home)
        certbot = os.path.join(order_bench.BENCH_VENV, 'bin', 'certbot')
        env = dict(self.env, REQUESTS_CA_BUNDLE=fleet.env['FLEET_ACME_CA'])
        env.pop('SSL_CERT_FILE', None)
        env.pop('CURL_CA_BUNDLE', None)
        with fleetlib.Mounts(fleet) as mounts:
            webroots = [os.path.join(mounts.paths[n], fleet.webroot.lstrip('/'), '.well-known',
                                     'acme-challenge') for n in nodes]
            auth = os.path.join(home, 'auth-hook.sh')
            cleanup = os.path.join(home, 'cleanup-hook.sh')
            # The shared webroot: every node can answer every token.
            with open(auth, 'w') as handle:
                handle.write('#!/bin/sh\nset -e\nfor d in %s; do printf %%s "$CERTBOT_VALIDATION" '
                             '> "$d/$CERTBOT_TOKEN"; done\n' % ' '.join(webroots))
            with open(cleanup, 'w') as handle:
                handle.write('#!/bin/sh\nfor d in %s; do rm -f "$d/$CERTBOT_TOKEN"; done\n'
                             % ' '.join(webroots))
            os.chmod(auth, 0o755)
            os.chmod(cleanup, 0o755)

            def common(node, sub):
                base = os.path.join(home, node)
                return [certbot, sub, '--non-interactive', '--server', fleet.env['FLEET_DIRECTORY'],
                        '--config-dir', base + '/config', '--work-dir', base + '/work',
                        '--logs-dir', base + '/logs']

            for node in nodes:  # accounts exist before, as on servers already set up
                tb.run(common(node, 'register') + ['--agree-tos', '--register-unsafely-without-email'],
                       env=env, timeout=120)
            orders = fleet.orders()
            start = time.monotonic()
            procs = [subprocess.Popen(
                common(node, 'certonly') + [
                    '--manual', '--preferred-challenges', 'http', '--manual-auth-hook', auth,
                    '--manual-cleanup-hook', cleanup, '-d', fleet.domain,
                    '--key-type', 'ecdsa', '--elliptic-curve', 'secp256r1'],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for node in nodes]
            failed = []
            for node, proc in zip(nodes, procs):
                _out, err = proc.communicate(timeout=RUN_TIMEOUT)
                if proc.returncode != 0:
                    failed.append('%s: %s' % (node, err.strip()[-500:]))
            wall = time.monotonic() - start
        if failed:
            die('certbot failed:\n%s' % '\n'.join(failed))
        got = [n for n in nodes if os.path.exists(
            os.path.join(home, n, 'config', 'live', fleet.domain, 'fullchain.pem'))]
        record = dict(kind='certbot', run='certbot per node', nodes=len(nodes), forks=None,
                      wall=round(wall, 2), orders=fleet.orders() - orders, certificates=len(got),
                      peak_tree_rss_mib=None, max_process_rss_mib=None, order=None, fanout=None)
        log('certbot per node on %d nodes: %.1f s, %d orders' % (len(nodes), wall, record['orders']))
        self.records.append(record)
        return record

    # -- versions ----------------------------------------------------------------

    def collect_versions(self, fleet):
        def out(cmd, **kw):
            return tb.run(cmd, check=False, **kw).stdout.strip()

        def venv(python, dist):
            return out([python, '-c', 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))',
                        dist])
        cpu = ''
        with open('/proc/cpuinfo') as handle:
            match = re.search(r'^model name\s*:\s*(.+)$', handle.read(), re.M)
            cpu = match.group(1) if match else platform.processor()
        with open('/proc/meminfo') as handle:
            mem_kib = int(re.search(r'MemTotal:\s*(\d+)', handle.read()).group(1))
        node = fleet.nodes[0]
        with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
            collection = re.search(r'^version:\s*(\S+)', handle.read(), re.M).group(1)
        with open('/etc/debian_version') as handle:
            debian = handle.read().strip()
        self.versions = {
            'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'machine': '%s, %d cores, %.0f GiB, Debian %s, kernel %s' % (
                cpu, os.cpu_count(), mem_kib / 1048576.0, debian, platform.release()),
            'load average at start': ' '.join('%.2f' % x for x in os.getloadavg()),
            'fleetcert.meteor': '%s (git %s)' % (collection, out(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])),
            'ansible-core': venv(self.env['FLEETCERT_PYTHON'], 'ansible-core'),
            'python': platform.python_version(),
            'podman': out(['podman', '--version']).split()[-1],
            'pebble': out(['dpkg-query', '-W', '-f=${Version}', 'pebble']),
            'nginx (nodes)': out(['podman', 'exec', node, 'nginx', '-v']) or
            tb.podman('exec', node, 'nginx', '-v', check=False).stderr.strip().split('/')[-1],
            'certbot': venv(os.path.join(order_bench.BENCH_VENV, 'bin', 'python'), 'certbot'),
            'node image': tb.image('host'),
            'connection to the nodes': 'fleet_podman (tests/fleet/plugins/connection: '
                                       'containers.podman.podman with pipelining), forks = N',
        }

    # -- the whole benchmark ---------------------------------------------------

    def merge_earlier(self):
        """--merge: keep the records of an earlier run (bench/results/fleet.raw.json)."""
        try:
            with open(os.path.join(RESULTS, 'fleet.raw.json')) as handle:
                earlier = json.load(handle)
        except (OSError, ValueError):
            return
        # A size's earlier records go when that size is measured again (main), so a
        # run stopped half way still leaves every size measured so far.
        self.records = earlier.get('records', [])
        self.load = earlier.get('load') if self.args.skip_load else None
        self.versions = earlier.get('versions') or {}

    def main(self):
        if self.args.merge:
            self.merge_earlier()
        order_bench.ensure_prerequisites()
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        ensure_plot_venv()
        others = [n for n in tb.podman('ps', '--format', '{{.Names}}').stdout.split()
                  if n.startswith('fleet-') and not n.startswith('fleet-%s-' % FLEET_NAME)]
        if others:
            log('note: other fleets are running (%s): they share the 2 cores' % ', '.join(sorted(others)))
        try:
            if not self.args.skip_load:
                log('renewal under load: 3 nodes with site.yml (nginx + app)')
                fleet = self.fresh_fleet(3, app=True)
                run = fleetlib.renewal_under_load(fleet, WORK, connections=4, interval=0.02,
                                                  requests_per_connection=40, websockets=12,
                                                  ws_interval=0.5)
                if run['playbook'].rc != 0:
                    die('the renewal under load failed:\n%s' % run['playbook'].summary())
                self.load = {'summary': run['summary'], 'marks': run['marks'],
                             'old_serials': run['old_serials'], 'new_serials': run['new_serials']}
            for nodes in self.args.sizes:
                log('fleet of %d nodes (nginx only)' % nodes)
                self.records = [r for r in self.records if r['nodes'] != nodes]
                fleet = self.fresh_fleet(nodes)
                if not self.versions:
                    self.collect_versions(fleet)
                self.playbook_run(fleet, 'fresh', 'certificates')
                self.playbook_run(fleet, 'renewal', 'certificates', {'fleetcert_force_renew': True})
                self.playbook_run(fleet, 'no-op', 'renew')
                if not self.args.skip_certbot:
                    self.certbot_per_node(fleet)
                # Results so far: a long run that is stopped still leaves them.
                self.write(quiet=True)
        finally:
            if self.fleet is not None and not self.args.keep:
                self.fleet.down()
        self.write()

    # -- results -------------------------------------------------------------------

    def targets(self):
        ours = [r for r in self.records if r['kind'] == 'fleetcert']
        rows = []
        ordering = [r for r in ours if r['run'] in ('fresh', 'renewal')]
        rows.append(('one order per fleet at every N',
                     all(r['orders'] == 1 for r in ordering) and
                     all(r['orders'] == 0 for r in ours if r['run'] == 'no-op'),
                     ', '.join('N=%d %s: %d' % (r['nodes'], r['run'], r['orders']) for r in ordering)))
        noop = [r for r in ours if r['run'] == 'no-op' and r['nodes'] == 25]
        if noop:
            rows.append(('no-op daily run on 25 nodes under %d s' % TARGET_NOOP_25,
                         noop[0]['wall'] < TARGET_NOOP_25, '%.1f s' % noop[0]['wall']))
        fan = sorted((r['nodes'], r['fanout']) for r in ours if r['run'] == 'renewal' and r['fanout'])
        if len(fan) >= 2:
            (n0, t0), (n1, t1) = fan[0], fan[-1]
            rows.append(('fan-out time grows sub-linearly with N', t1 / t0 < float(n1) / n0,
                         'renewal fan-out %.1f s at N=%d, %.1f s at N=%d: x%.2f for x%.2f nodes'
                         % (t0, n0, t1, n1, t1 / t0, float(n1) / n0)))
        return rows

    def write(self, quiet=False):
        os.makedirs(RESULTS, exist_ok=True)
        result = {'versions': self.versions, 'settings': {
            'sizes': self.args.sizes, 'forks': self.args.forks, 'pebble_env': PEBBLE_ENV},
            'records': self.records, 'targets': [
                {'target': t, 'met': ok, 'measured': m} for t, ok, m in self.targets()]}
        if self.load:
            result['load'] = {'summary': {k: v for k, v in self.load['summary'].items() if k != 'failures'},
                              'failures': self.load['summary']['failures']}
        with open(os.path.join(RESULTS, 'fleet.json'), 'w') as handle:
            json.dump(result, handle, indent=1, sort_keys=True)
        with open(os.path.join(RESULTS, 'fleet.raw.json'), 'w') as handle:
            json.dump({'records': self.records, 'load': self.load, 'versions': self.versions}, handle)
        plot(os.path.join(RESULTS, 'fleet.json'), os.path.join(RESULTS, 'fleet.png'))
        markdown = self.markdown()
        with open(os.path.join(RESULTS, 'fleet.md'), 'w') as handle:
            handle.write(markdown)
        if not quiet:
            print(markdown)

    def markdown(self):
        out = ['# Fleet benchmark', '',
               'Made by `make bench-fleet` (`bench/fleet_bench.py`, whose docstring says exactly '
               'what is measured). Not a CI test: numbers depend on the machine and its load.', '']
        out += ['| | |', '|---|---|'] + ['| %s | %s |' % item for item in self.versions.items()] + ['']
        if self.load:
            s = self.load['summary']
            ws = s['websockets']
            out += ['## Forced renewal under load (3 nodes, nginx + app, through the load balancer)', '',
                    'tools/loadgen.py: 4 keep-alive HTTPS clients (a request every 20 ms each, a new '
                    'connection every 40 requests) and 12 websockets (an echo every 0.5 s, a ping every '
                    'tenth) while `certificates.yml -e fleetcert_force_renew=true` ran. Phases: before '
                    'the playbook started, during it, after every node served the new certificate.', '',
                    fleetlib.load_table(s), '',
                    '- failed requests: %d; keep-alive retries (a reused connection closed by an old '
                    'worker before the request was read, sent again once on a new connection, as HTTP '
                    'clients do): %d' % (s['failed'], s['keepalive_retries']),
                    '- connections opened after the switch: %d, serving %s (%d responses)'
                    % (s['connections_after_switch'], ', '.join(s['serials_after_switch']),
                       s['responses_on_connections_after_switch']),
                    '- websockets: %d opened, %d dropped, %d echoed after the switch, %d closed '
                    'cleanly; %d echoes + %d pongs, p99 round trip %s ms'
                    % (ws['opened'], len(ws['dropped']), ws['echoed_after_switch'], ws['closed_cleanly'],
                       ws['echoes'], ws['pongs'], ws['rtt_p99_ms']), '']
        out += ['## Certificate playbooks by fleet size (nginx-only nodes)', '',
                '![time vs N](fleet.png)', '',
                '| N | run | forks | wall s | ACME orders | order phase s | fan-out phase s | '
                'controller peak MiB (tree) | largest process MiB |',
                '|---:|---|---:|---:|---:|---:|---:|---:|---:|']
        for r in sorted(self.records, key=lambda r: (r['nodes'], r['kind'] != 'fleetcert')):
            out.append('| %d | %s | %s | %.1f | %d | %s | %s | %s | %s |' % (
                r['nodes'], r['run'], r['forks'] or '-', r['wall'], r['orders'],
                r.get('order') if r.get('order') is not None else '-',
                r.get('fanout') if r.get('fanout') is not None else '-',
                r['peak_tree_rss_mib'] if r['peak_tree_rss_mib'] is not None else '-',
                r['max_process_rss_mib'] if r['max_process_rss_mib'] is not None else '-'))
        out += ['', '"certbot per node": ordering only (no install, no reload), N processes at once, '
                'one account each; its orders are the point: N per renewal against one for the fleet.',
                '', '## Targets', '', '| target | met | measured |', '|---|---|---|']
        out += ['| %s | %s | %s |' % (t, 'yes' if ok else '**no**', m) for t, ok, m in self.targets()]
        out += ['', '## Earlier', '', EARLIER]
        return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------
# Plot (own venv: matplotlib)
# ---------------------------------------------------------------------------

def ensure_plot_venv():
    python = os.path.join(PLOT_VENV, 'bin', 'python')
    stamp = os.path.join(PLOT_VENV, '.requirements')
    want = '\n'.join(PLOT_REQUIREMENTS) + '\n'
    have = None
    if os.path.exists(stamp):
        with open(stamp) as handle:
            have = handle.read()
    if have != want:
        log('installing matplotlib into %s' % PLOT_VENV)
        if not os.path.exists(python):
            tb.run(['/usr/bin/python3', '-m', 'venv', PLOT_VENV])
        tb.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check'] + list(PLOT_REQUIREMENTS),
               timeout=900)
        with open(stamp, 'w') as handle:
            handle.write(want)


PLOT = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = json.load(open(sys.argv[1]))
records = data["records"]
fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
series = [("fleetcert", "fresh", "fresh issuance (certificates.yml)", "o-"),
          ("fleetcert", "renewal", "forced renewal (certificates.yml)", "s-"),
          ("fleetcert", "no-op", "no-op daily run (renew.yml)", "^-"),
          ("certbot", "certbot per node", "certbot per node (ordering only)", "x--")]
for kind, run, label, style in series:
    pts = sorted((r["nodes"], r["wall"]) for r in records if r["kind"] == kind and r["run"] == run)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        if kind == "certbot":
            for r in records:
                if r["kind"] == kind:
                    ax.annotate("%d orders" % r["orders"], (r["nodes"], r["wall"]),
                                textcoords="offset points", xytext=(4, 6), fontsize=8)
pts = sorted((r["nodes"], r["fanout"]) for r in records if r["run"] == "renewal" and r.get("fanout"))
if pts:
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "d:", label="renewal: fan-out phase only")
sizes = sorted(set(r["nodes"] for r in records))
ax.set_xticks(sizes)
ax.set_xlabel("nodes in the fleet (N)")
ax.set_ylabel("wall time (s)")
ax.set_title("fleetcert: certificate playbooks vs fleet size (1 ACME order per fleet)")
ax.grid(True, alpha=0.3)
ax.set_ylim(bottom=0)
ax.legend(fontsize=8)
fig.text(0.01, 0.01, data["versions"].get("machine", ""), fontsize=6, color="gray")
fig.tight_layout()
fig.savefig(sys.argv[2])
'''


def plot(json_path, png_path):
    tb.run([os.path.join(PLOT_VENV, 'bin', 'python'), '-c', PLOT, json_path, png_path])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='3,10,25', help='fleet sizes, comma-separated (1-50)')
    parser.add_argument('--forks', default='n', help="ansible forks: 'n' (one per node) or a number")
    parser.add_argument('--skip-load', action='store_true', help='skip the renewal under load')
    parser.add_argument('--skip-certbot', action='store_true', help='skip certbot per node')
    parser.add_argument('--keep', action='store_true', help='keep the last fleet running')
    parser.add_argument('--merge', action='store_true',
                        help='keep the results of an earlier run for the sizes not measured now')
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.sizes.split(',')]
    except ValueError:
        parser.error('--sizes: comma-separated numbers, got %r' % args.sizes)
    if not all(1 <= n <= 50 for n in args.sizes):
        parser.error('--sizes: each from 1 to 50 (scripts/fleet.sh --nodes)')
    if args.forks != 'n' and not (args.forks.isdigit() and int(args.forks) >= 1):
        parser.error("--forks: 'n' or a positive number, got %r" % args.forks)
    return args


def main(argv=None):
    if os.geteuid() != 0:
        die('run as root (rootful podman, like the test bed)')
    Bench(parse_args(sys.argv[1:] if argv is None else argv)).main()
    return 0


if __name__ == '__main__':
    sys.exit(main())
