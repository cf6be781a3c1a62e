# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Faults the fleet must survive, each caused for real on the local fleet.

Each test starts from a converged fleet (conftest.converge: every node serves
one certificate that verifies against the running Pebble) and checks, after
the fault, what every node has on disk (its certificate tree, hashed), what it
serves (openssl s_client against Pebble's issuing root) and how many orders
the CA received.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shlex
import socket

import pytest

import fleetlib
from fleetlib import tb

HERE = os.path.dirname(os.path.abspath(__file__))
FORCE = {'fleetcert_force_renew': True}


def trees(fleet):
    return {node: fleet.tree(node) for node in fleet.nodes}


def serials(served):
    return {node: s['serial'] for node, s in served.items()}


def assert_serving_valid(fleet, root, allowed=None):
    """Every node serves a certificate that verifies against Pebble's root for the name, and
    the pair `live` points at belongs together (key matches), so a reload would keep serving."""
    served = fleet.served_by_nodes(root)
    for node, facts in served.items():
        assert facts['verified'], (node, facts)
        assert facts['chain'] >= 2, (node, 'full chain expected', facts)
        if allowed is not None:
            assert facts['serial'] in allowed, (node, facts['serial'], allowed)
        fullchain, key = fleet.live_pair(node)
        assert fleetlib.key_matches(fullchain, key), '%s: live certificate and key do not match' % node
    return served


def failures(result):
    """{host: [msg, ...]} of the failed tasks of a run."""
    out = {}
    for _task, host, msg in result.failed_tasks:
        out.setdefault(host, []).append(msg or '')
    return out


def closed_port():
    """A local port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', port), timeout=2).close()
    return port


def test_ca_unreachable_at_order_time_changes_nothing(fleet, converged):
    """The CA's address refuses connections: the play fails clearly, no node changes."""
    before, served_before, orders = trees(fleet), fleet.served_by_nodes(converged), fleet.orders()
    files = {n: fleet.challenge_files(n) for n in fleet.nodes}
    url = 'https://localhost:%d/dir' % closed_port()
    result = fleet.playbook('certificates', extra_vars=dict(FORCE, fleetcert_acme_directory_url=url))

    assert result.rc != 0, result.summary()
    messages = ' '.join(m for msgs in failures(result).values() for m in msgs)
    assert url in messages or 'localhost' in messages, 'the failure names the CA: %s' % messages
    assert 'refused' in messages.lower() or 'connect' in messages.lower(), messages
    assert trees(fleet) == before, 'a node changed although the CA was unreachable'
    assert serials(fleet.served_by_nodes(converged)) == serials(served_before)
    assert {n: fleet.challenge_files(n) for n in fleet.nodes} == files
    assert fleet.orders() == orders


def offer(fleet, node, **extra):
    extra_vars = {'offer_cert_root': fleet.cert_root, 'offer_site': fleetlib.SITE,
                  'offer_names': [fleet.domain]}
    extra_vars.update(('offer_' + key, value) for key, value in extra.items())
    return tb.run_playbook(os.path.join(HERE, 'playbooks', 'offer_certificate.yml'),
                           inventory=fleet.inventory, extra_vars=extra_vars, limit=node,
                           env=fleetlib.playbook_env())


def cut_inside(pem, block, fraction=0.5):
    """`pem` cut in the middle of its `block`-th PEM block (0: the leaf), like a file
    whose writer died."""
    starts = [m.start() for m in re.finditer('-----BEGIN ', pem)]
    ends = [m.end() for m in re.finditer('-----END [A-Z ]+-----', pem)]
    return pem[:starts[block] + int((ends[block] - starts[block]) * fraction)]


FAULTS = {
    # fault: (what is offered, words the refusal must contain)
    'mismatched key': ('private_key_content', 'belong'),
    'truncated leaf': ('certificate', 'truncated'),
    'truncated chain': ('certificate', 'truncated'),
    'truncated key': ('private_key_content', ''),
}


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_bad_certificate_or_key_is_refused(fleet, converged, fault):
    """cert_deploy, the only writer of the tree nginx reads, refuses a bad pair before any switch."""
    node = fleet.nodes[0]
    before, served_before = fleet.tree(node), fleet.served(fleet.node_ip(node), converged)
    fullchain, key = fleet.live_pair(node)
    if fault == 'mismatched key':
        key = tb.run(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
                      'ec_paramgen_curve:P-256']).stdout
    elif fault == 'truncated leaf':
        fullchain = cut_inside(fullchain, 0)
    elif fault == 'truncated chain':
        # Cut in the intermediate's BEGIN line: what is left of it is not a
        # complete BEGIN CERTIFICATE marker.
        fullchain = cut_inside(fullchain, 1, fraction=0.01)
    else:
        key = cut_inside(key, 0)
    result = offer(fleet, node, certificate=fullchain, key=key)

    secret = [line for line in key.splitlines() if len(line) > 16 and '-----' not in line]
    assert not [line for line in secret if line in result.stdout + result.stderr], \
        'private key material in the output'
    assert result.rc != 0, result.summary()
    res = result.result('Install the offered certificate', node)
    assert res.get('failed'), res
    option, word = FAULTS[fault]
    assert res['msg'].startswith(option + ':'), 'the refusal names the option: %s' % res['msg']
    assert word in res['msg'], res['msg']
    assert fleet.tree(node) == before, 'the tree changed although the pair was refused'
    assert fleet.served(fleet.node_ip(node), converged)['serial'] == served_before['serial']


def test_broken_nginx_on_one_node_is_not_reloaded(fleet, converged):
    """nginx's configuration broken outside our control on one node: that node is not
    reloaded and keeps serving; the play names it and the nginx -t error; the others renew."""
    broken = fleet.nodes[1]
    others = [n for n in fleet.nodes if n != broken]
    before, orders = trees(fleet), fleet.orders()
    old = fleet.served(fleet.node_ip(broken), converged)['serial']
    pids = fleet.nginx_pids(broken)
    conf = '/etc/nginx/conf.d/zz-outside-our-control.conf'
    fleet.exec(broken, "echo 'this_directive_is_broken on;' > %s" % conf)
    try:
        result = fleet.playbook('certificates', extra_vars=FORCE)
        served_during = fleet.served_by_nodes(converged)
        pids_after = fleet.nginx_pids(broken)
    finally:
        fleet.exec(broken, 'rm -f %s' % conf)

    assert result.rc != 0, 'the play must report the node it could not update\n' + result.summary()
    failed = failures(result)
    assert list(failed) == [broken], failed
    text = ' '.join(failed[broken])
    assert broken in text, 'the failure names the node: %s' % text
    nginx_t = [hosts[broken] for name, hosts in result.tasks
               if name.endswith('Test the nginx configuration') and broken in hosts]
    assert nginx_t and nginx_t[0].get('failed'), nginx_t
    assert 'this_directive_is_broken' in nginx_t[0].get('stderr', ''), nginx_t[0]
    assert 'this_directive_is_broken' in text, \
        'the failure message of %s should carry the nginx -t error: %s' % (broken, text)

    # No reload there: same master, same workers; it kept serving the old certificate.
    assert pids_after == pids, (pids, pids_after)
    assert served_during[broken]['serial'] == old and served_during[broken]['verified']
    assert fleet.tree(broken)['live'] == before[broken]['live'], 'live must point back at the old version'
    new = {served_during[n]['serial'] for n in others}
    assert len(new) == 1 and old not in new, served_during
    assert fleet.orders() == orders + 1

    # Repaired: the next (daily) run brings it up to date by copying, no new order.
    again = fleet.playbook('renew')
    assert again.rc == 0, again.summary()
    assert serials(fleet.served_by_nodes(converged)) == {n: new.copy().pop() for n in fleet.nodes}
    assert fleet.orders() == orders + 1


def issued_versions(fleet, node):
    """The node's certificate versions from the CA (no placeholder), oldest first."""
    return sorted({path.split('/')[2] for path in fleet.tree(node)['files']
                   if path.startswith('./versions/') and '/placeholder-' not in path})


def point_live(fleet, node, version):
    """Switch `live` like cert_deploy does (new symlink, rename), without touching nginx."""
    site = '%s/%s' % (fleet.cert_root, fleetlib.SITE)
    fleet.exec(node, 'cd %s && ln -sfn versions/%s live.fault && mv -T live.fault live'
               % (shlex.quote(site), shlex.quote(version)))


def test_live_switched_but_nginx_not_reloaded_is_reloaded_by_the_next_run(fleet, converged):
    """The window a killed run can leave open, made on purpose: `live` points at the newest
    certificate but nginx still serves an older one. The daily run sees it through the
    served serial, reloads that node only, and orders nothing."""
    node = fleet.nodes[0]
    if len(issued_versions(fleet, node)) < 2:
        renewed = fleet.playbook('certificates', extra_vars=FORCE)
        assert renewed.rc == 0, renewed.summary()
    newest = fleet.tree(node)['live']
    older = [v for v in issued_versions(fleet, node) if v != newest][-1]
    new_serial = fleet.served(fleet.node_ip(node), converged)['serial']
    old_serial = fleetlib.serial_of_pem(fleet.exec(node, [
        'cat', '%s/%s/versions/%s/cert.pem' % (fleet.cert_root, fleetlib.SITE, older)]).stdout)
    assert old_serial != new_serial

    point_live(fleet, node, older)
    fleet.exec(node, 'nginx -s reload')
    fleetlib.wait_for(lambda: fleet.served(fleet.node_ip(node), converged)['serial'] == old_serial,
                      30, interval=0.2, what='%s serving the older certificate' % node)
    point_live(fleet, node, newest)
    assert fleet.served(fleet.node_ip(node), converged)['serial'] == old_serial, \
        'nginx must not have picked up the switch on its own'
    others_before = {n: fleet.nginx_pids(n) for n in fleet.nodes if n != node}
    before, orders = trees(fleet), fleet.orders()

    result = fleet.playbook('renew')
    assert result.rc == 0, result.summary()
    served = assert_serving_valid(fleet, converged)
    assert serials(served)[node] == new_serial, served
    assert trees(fleet) == before, 'a reload must not change any certificate tree'
    assert fleet.orders() == orders
    assert {n: fleet.nginx_pids(n) for n in others_before} == others_before, \
        'only the node that served the wrong certificate is reloaded'
    reports = [res['msg'] for res in result.results('Show the fleet\'s certificates').values()]
    assert len(reports) == 1, reports
    report = ' '.join(reports[0])
    assert '%s: serial %s' % (node, new_serial) in report, report
    assert 'reloaded (nginx served %s, not the live certificate)' % old_serial in report, report


def test_interrupted_fanout_leaves_valid_certificates_and_next_run_converges(fleet, converged, work):
    """ansible-playbook killed (SIGKILL, with its forks) right after the first node switched:
    every node still serves a valid certificate with its key; the next run converges all
    nodes by copying, with no new order."""
    before, orders = trees(fleet), fleet.orders()
    old = set(serials(fleet.served_by_nodes(converged)).values())
    log = os.path.join(work, 'interrupted.log')
    with fleetlib.Mounts(fleet) as mounts:
        # One fork: the nodes switch one after the other, so there is a middle.
        proc = fleet.start_playbook('certificates', extra_vars=FORCE, forks=1, log=log)
        try:
            switched = fleetlib.wait_for(
                lambda: [n for n in fleet.nodes if mounts.live(n) != before[n]['live']] or
                proc.poll() is not None, 300, interval=0.005, what='the first node to switch')
        finally:
            fleetlib.kill_group(proc)
        states = {n: mounts.live(n) for n in fleet.nodes}
    assert switched is not True, 'the playbook ended before any node switched:\n' + open(log).read()[-3000:]
    assert proc.returncode != 0
    assert any(states[n] == before[n]['live'] for n in fleet.nodes), \
        'killed too late, every node had switched: %s' % states
    assert fleet.orders() == orders + 1

    served = assert_serving_valid(fleet, converged)
    new_versions = {states[n] for n in fleet.nodes if states[n] != before[n]['live']}
    assert len(new_versions) == 1, states
    new_serial = new_versions.pop().rsplit('-', 1)[1].lstrip('0')
    assert set(serials(served).values()) <= old | {new_serial}, (served, old, new_serial)

    # A killed run cannot clean up: its challenge files stay until the next run.
    leftovers = {n: fleet.challenge_files(n) for n in fleet.nodes}
    # The switched node was killed before (or during) its nginx reload: it
    # may serve the old certificate although `live` is new.
    unreloaded = [n for n in fleet.nodes if states[n] != before[n]['live']
                  and serials(served)[n] != new_serial]

    again = fleet.playbook('certificates')
    assert again.rc == 0, again.summary()
    assert fleet.orders() == orders + 1, 'the next run must not order again'
    served = assert_serving_valid(fleet, converged)
    assert set(serials(served).values()) == {new_serial}, \
        'every node must serve the new certificate after the next run: %s' % serials(served)
    assert {n: fleet.challenge_files(n) for n in fleet.nodes} == {n: [] for n in fleet.nodes}, \
        'challenge files left by the killed run: %s' % leftovers
    print('\nkilled run: switched but not reloaded: %s; challenge files left: %s'
          % (unreloaded or 'none', {n: len(f) for n, f in leftovers.items()}))


@pytest.mark.restarts_ca
def test_ca_gone_between_challenges_and_finalization(fleet, converged, work):
    """Pebble stopped once the challenge files are on every node: nodes keep their
    certificate, the challenge files are removed, and the next run succeeds."""
    before, served_before = trees(fleet), fleet.served_by_nodes(converged)
    # A file no run wrote (left by a killed run): the order path removes it too.
    for node in fleet.nodes:
        fleet.exec(node, 'mkdir -p %s/.well-known/acme-challenge && echo stale > '
                   '%s/.well-known/acme-challenge/stale-Token_from-a-killed-run'
                   % (fleet.webroot, fleet.webroot))
    old_files = {n: set(fleet.challenge_files(n)) for n in fleet.nodes}
    log = os.path.join(work, 'ca-gone.log')
    with fleetlib.Mounts(fleet) as mounts:
        proc = fleet.start_playbook('certificates', extra_vars=FORCE, log=log)
        try:
            placed = fleetlib.wait_for(
                lambda: all(set(mounts.challenges(n)) - old_files[n] for n in fleet.nodes)
                or proc.poll() is not None,
                300, interval=0.01, what='challenge files on every node')
            if proc.poll() is None:
                fleet.stop_pebble()
            rc = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                fleetlib.kill_group(proc)
    with open(log) as handle:
        output = handle.read()
    assert placed is True and rc != 0, output[-3000:]
    # It failed at finalization, not before: the order had been opened.
    assert 'The ACME order failed' in output, output[-3000:]
    assert trees(fleet) == before, 'a node changed although the order never finished'
    assert serials(fleet.served_by_nodes(converged)) == serials(served_before)
    leftovers = {n: fleet.challenge_files(n) for n in fleet.nodes}
    assert not any(leftovers.values()), 'challenge files left: %s' % leftovers

    fleet.restart_pebble()
    root = fleet.issuing_root()
    result = fleet.playbook('certificates', extra_vars=FORCE)
    assert result.rc == 0, result.summary()
    served = assert_serving_valid(fleet, root)
    assert len(set(serials(served).values())) == 1
    assert not set(serials(served).values()) & set(serials(served_before).values())
    assert not any(fleet.challenge_files(n) for n in fleet.nodes)


@pytest.mark.restarts_ca
def test_half_the_nonces_rejected_the_whole_run_succeeds(fleet, converged):
    """Pebble rejects 50% of valid nonces (badNonce) for the whole run: the run succeeds.

    The next test's converge() puts Pebble back to its default settings.
    """
    pebble = fleet.restart_pebble({'PEBBLE_WFE_NONCEREJECT': '50'})
    assert 'Configured to reject 50% of good nonces' in pebble.log_text()
    root = fleet.issuing_root()
    result = fleet.playbook('certificates', extra_vars=FORCE)
    assert result.rc == 0, result.summary()
    served = assert_serving_valid(fleet, root)
    assert len(set(serials(served).values())) == 1
    log = pebble.log_text()
    assert fleetlib.count_orders(log) == 1, 'one order despite the retries'
    print('\nunder 50%% nonce rejection: %d POST requests for one order'
          % len(re.findall(r' POST /\S* -> calling handler', log)))
