# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetcert.meteor.acme_challenge against nginx in real containers.

Every file the module writes is fetched back over HTTP with curl from the host,
the way a CA would, and the last test lets real Pebble validate through it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import subprocess

import pytest

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
APPLY = os.path.join(PLAYBOOKS, 'challenge_apply.yml')
ISSUE = os.path.join(PLAYBOOKS, 'cert_info_issue.yml')
WEBROOT = '/var/www/acme'
CHALLENGE_DIR = WEBROOT + '/.well-known/acme-challenge'
TASK = 'Apply acme_challenge'


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def new_challenge(name='app.example.test'):
    """Same shape as acme_order state=pending returns (extra keys included)."""
    token = b64url(os.urandom(32))
    return {
        'name': name,
        'token': token,
        'key_authorization': '%s.%s' % (token, b64url(os.urandom(32))),
        'path': '/.well-known/acme-challenge/' + token,
        'status': 'pending',
    }


def fetch(host, token):
    """(status, body) of GET /.well-known/acme-challenge/<token> from the host machine."""
    proc = subprocess.run(
        ['curl', '--noproxy', '*', '-sS', '-m', '5', '-o', '-', '-w', '\n%{http_code}',
         'http://%s/.well-known/acme-challenge/%s' % (host.ip, token)],
        check=True, capture_output=True, text=True)
    body, _sep, status = proc.stdout.rpartition('\n')
    return int(status), body


def listing(host):
    """Names in the challenge directory ('' when it does not exist)."""
    return host.exec('ls -A %s 2>/dev/null || true' % CHALLENGE_DIR).stdout.split()


def apply(run_playbook, make_inventory, hosts, check_mode=False, diff=False, **params):
    extra = {'challenge_webroot': WEBROOT}
    extra.update(('challenge_' + key, value) for key, value in params.items())
    return run_playbook(APPLY, inventory=make_inventory({'web': hosts}), extra_vars=extra,
                        check_mode=check_mode, diff=diff)


def only(result, host):
    return result.result(TASK, host.name)


@pytest.fixture
def web(web_host):
    return web_host()


def test_present_serves_the_key_authorization_and_is_idempotent(run_playbook, make_inventory, web):
    first, second = new_challenge('a.example.test'), new_challenge('b.example.test')
    result = apply(run_playbook, make_inventory, [web], list=[first, second])
    result.assert_ok()
    res = only(result, web)
    assert res['changed'] is True
    assert sorted(res['files']) == sorted(CHALLENGE_DIR + '/' + c['token'] for c in (first, second))
    for challenge in (first, second):
        assert fetch(web, challenge['token']) == (200, challenge['key_authorization'])
    modes = web.exec('stat -c "%%a %%n" %s/.well-known %s %s/%s'
                     % (WEBROOT, CHALLENGE_DIR, CHALLENGE_DIR, first['token'])).stdout.split('\n')
    assert [line.split()[0] for line in modes if line] == ['755', '755', '644']

    again = apply(run_playbook, make_inventory, [web], list=[first, second])
    again.assert_ok()
    assert only(again, web)['changed'] is False
    assert only(again, web)['files'] == []


def test_changed_key_authorization_is_rewritten(run_playbook, make_inventory, web):
    challenge = new_challenge()
    apply(run_playbook, make_inventory, [web], list=[challenge]).assert_ok()
    challenge['key_authorization'] = '%s.%s' % (challenge['token'], b64url(os.urandom(32)))
    result = apply(run_playbook, make_inventory, [web], list=[challenge], diff=True)
    assert only(result, web)['changed'] is True
    assert fetch(web, challenge['token']) == (200, challenge['key_authorization'])


def test_check_mode_writes_nothing_and_diff_shows_the_file(run_playbook, make_inventory, web):
    challenge = new_challenge()
    result = apply(run_playbook, make_inventory, [web], list=[challenge], check_mode=True, diff=True)
    result.assert_ok()
    res = only(result, web)
    assert res['changed'] is True
    path = CHALLENGE_DIR + '/' + challenge['token']
    assert res['diff'] == [{'before_header': path, 'after_header': path,
                            'before': '', 'after': challenge['key_authorization']}]
    assert web.exec(['test', '-e', WEBROOT + '/.well-known'], check=False).returncode != 0
    assert fetch(web, challenge['token'])[0] == 404


@pytest.mark.parametrize('bad_token', ['../../../../etc/fleetcert-evil', 'sub/dir-token-aaaaaaaaaaaaaaaa', '..', '.'])
def test_bad_token_is_refused_and_nothing_is_written(run_playbook, make_inventory, web, bad_token):
    good = new_challenge()
    bad = dict(new_challenge(), token=bad_token, key_authorization=bad_token + '.' + b64url(os.urandom(32)))
    web.exec('touch /tmp/cert-marker')
    result = apply(run_playbook, make_inventory, [web], list=[good, bad])
    assert result.rc != 0
    res = only(result, web)
    assert res['failed'] is True
    assert res['msg'].startswith('challenges[1].token: ')
    # Validation happens before any write: not even the valid challenge exists.
    assert listing(web) == []
    assert fetch(web, good['token'])[0] == 404
    written = web.exec('find / -xdev -newer /tmp/cert-marker -type f '
                       '-not -path "/proc/*" -not -path "/tmp/*" -not -path "/root/.ansible/*" '
                       '-not -path "/var/log/*" -not -path "/run/*"').stdout.split()
    assert written == []


def test_key_authorization_for_another_token_is_refused(run_playbook, make_inventory, web):
    good, other = new_challenge(), new_challenge()
    good['key_authorization'] = other['key_authorization']
    result = apply(run_playbook, make_inventory, [web], list=[good])
    assert result.rc != 0
    assert only(result, web)['msg'].startswith('challenges[0].key_authorization: does not belong')
    assert listing(web) == []


def test_relative_webroot_is_refused(run_playbook, make_inventory, web):
    result = run_playbook(APPLY, inventory=make_inventory({'web': [web]}),
                          extra_vars={'challenge_webroot': 'var/www/acme', 'challenge_list': [new_challenge()]})
    assert result.rc != 0
    assert only(result, web)['msg'] == "webroot: 'var/www/acme' must be an absolute path"


def test_absent_removes_only_the_given_tokens(run_playbook, make_inventory, web):
    keep, drop = new_challenge(), new_challenge()
    apply(run_playbook, make_inventory, [web], list=[keep, drop]).assert_ok()

    check = apply(run_playbook, make_inventory, [web], list=[drop], state='absent', check_mode=True)
    assert only(check, web)['changed'] is True
    assert fetch(web, drop['token'])[0] == 200

    result = apply(run_playbook, make_inventory, [web], list=[drop], state='absent')
    result.assert_ok()
    assert only(result, web)['changed'] is True
    assert fetch(web, drop['token'])[0] == 404
    assert fetch(web, keep['token']) == (200, keep['key_authorization'])

    again = apply(run_playbook, make_inventory, [web], list=[drop], state='absent')
    assert only(again, web)['changed'] is False


def test_purge_removes_every_file_but_keeps_subdirectories(run_playbook, make_inventory, web):
    apply(run_playbook, make_inventory, [web], list=[new_challenge(), new_challenge()]).assert_ok()
    web.exec('echo leftover > %s/stale && mkdir %s/keepdir' % (CHALLENGE_DIR, CHALLENGE_DIR))
    result = apply(run_playbook, make_inventory, [web], state='absent', purge=True)
    result.assert_ok()
    assert only(result, web)['changed'] is True
    assert len(only(result, web)['files']) == 3
    assert listing(web) == ['keepdir']
    assert only(apply(run_playbook, make_inventory, [web], state='absent', purge=True), web)['changed'] is False


def test_purge_with_state_present_is_refused(run_playbook, make_inventory, web):
    result = apply(run_playbook, make_inventory, [web], purge=True)
    assert result.rc != 0
    assert only(result, web)['msg'] == 'purge: only valid with state=absent'


def test_every_node_answers_and_pebble_validates(run_playbook, make_inventory, web_host, pebble, tmp_path):
    """Both nodes get the token; real Pebble fetches it from nginx (on node 0) and issues."""
    nodes = [web_host(), web_host()]
    name = 'fleet-%s.example.test' % b64url(os.urandom(4)).lower().replace('_', 'x').replace('-', 'y')
    pebble.add_a(name, nodes[0].ip)
    try:
        result = run_playbook(ISSUE, inventory=make_inventory({'web': nodes}), extra_vars={
            'acme_directory_url': pebble.directory_url,
            'acme_ca_bundle': pebble.ca_path,
            'acme_account_key_path': str(tmp_path / 'account.pem'),
            'issue_names': [name],
            'issue_dest_dir': str(tmp_path / 'live'),
            'challenge_webroot': WEBROOT,
        })
    finally:
        pebble.clear_a(name)
    result.assert_ok()
    placed = result.results('Place challenge files')
    assert [placed[node.name]['changed'] for node in nodes] == [True, True]
    issued = result.results('Validate, finalize, download')['localhost']
    assert issued['status'] == 'valid'
    assert issued['names'] == [name]
    leaf = subprocess.run(['openssl', 'x509', '-noout', '-ext', 'subjectAltName', '-in',
                           str(tmp_path / 'live' / 'cert.pem')], check=True, capture_output=True, text=True)
    assert 'DNS:' + name in leaf.stdout
    removed = result.results('Remove challenge files')
    assert [removed[node.name]['changed'] for node in nodes] == [True, True]
    for node in nodes:
        assert listing(node) == []
