# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of cert_deploy: names, bundle checks, prune plan, tree layout.

The module end to end (through Ansible, on a real container) is covered by
tests/integration/test_cert_deploy.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.modules import cert_deploy as cd

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject_key, subject, issuer_key, issuer, ca, names=None, serial=None,
           not_before=NOW - datetime.timedelta(days=1), days=90):
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certs):
    return b''.join(crypto.certificate_to_pem(c) for c in certs).decode()


@pytest.fixture(scope='module')
def pki():
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue(root_key, 'root', root_key, 'root', True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _issue(inter_key, 'inter', root_key, 'root', True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _issue(leaf_key, 'app.example.test', inter_key, 'inter', False,
                  names=['app.example.test', 'www.example.test'], serial=0x1234567890abcdef1234)
    other_key = ec.generate_private_key(ec.SECP256R1())
    return dict(root=root, inter=inter, inter_key=inter_key, leaf=leaf, leaf_key=leaf_key,
                other_key=other_key,
                key_pem=crypto.private_key_to_pem(leaf_key).decode())


@pytest.mark.parametrize('value', ['app', 'app.example.com', 'a_b-c.1', '20260301-abc.1'])
def test_valid_names(value):
    assert cd.validate_name(value, 'site') == value


@pytest.mark.parametrize('value', ['', '.', '..', '../etc', 'a/b', '-x', '.hidden', 'a..b',
                                   'x' * 129, 'a b', None])
def test_invalid_names_name_the_option(value):
    with pytest.raises(FleetcertError) as info:
        cd.validate_name(value, 'site')
    assert info.value.msg.startswith('site: ')


def test_version_id_sorts_by_issue_time_and_carries_the_serial(pki):
    vid = cd.version_id(pki['leaf'])
    assert vid == '20260228120000-1234567890abcdef'
    assert cd.version_id(pki['leaf'], placeholder=True) == 'placeholder-' + vid
    later = _issue(pki['leaf_key'], 'x', pki['inter_key'], 'inter', False, serial=1,
                   not_before=NOW)
    assert cd.version_id(later) > vid


def test_verify_bundle_accepts_a_good_bundle(pki):
    leaf, chain, _key, files = cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']),
                                                pki['key_pem'], names=['WWW.example.test'], now=NOW)
    assert leaf.serial_number == pki['leaf'].serial_number
    assert [c.subject for c in chain] == [pki['inter'].subject]
    assert files['fullchain.pem'] == files['cert.pem'] + files['chain.pem']
    assert files['privkey.pem'].startswith(b'-----BEGIN PRIVATE KEY-----')


def test_verify_bundle_takes_the_chain_from_a_fullchain(pki):
    _leaf, chain, _key, files = cd.verify_bundle(_pem(pki['leaf'], pki['inter']), None,
                                                 pki['key_pem'], now=NOW)
    assert len(chain) == 1
    assert files['chain.pem'] == _pem(pki['inter']).encode()


def test_verify_bundle_refuses_a_foreign_key(pki):
    with pytest.raises(FleetcertError, match='^private_key_content: .*does not belong'):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']),
                         crypto.private_key_to_pem(pki['other_key']).decode(), now=NOW)


def test_verify_bundle_refuses_a_wrong_chain(pki):
    with pytest.raises(FleetcertError, match=r'^chain\[0\]: does not sign'):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['root']), pki['key_pem'], now=NOW)
    with pytest.raises(FleetcertError, match=r'^chain\[1\]: does not sign'):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter'], pki['leaf']), pki['key_pem'], now=NOW)


def test_verify_bundle_refuses_a_truncated_certificate(pki):
    pem = _pem(pki['leaf'])
    with pytest.raises(FleetcertError, match='^certificate: .*truncated'):
        cd.verify_bundle(pem[:len(pem) // 2], _pem(pki['inter']), pki['key_pem'], now=NOW)


def test_verify_bundle_refuses_a_truncated_key(pki):
    with pytest.raises(FleetcertError, match='^private_key_content: '):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']), pki['key_pem'][:100], now=NOW)


def test_verify_bundle_refuses_an_expired_certificate(pki):
    with pytest.raises(FleetcertError, match='^certificate: expired'):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']), pki['key_pem'],
                         now=NOW + datetime.timedelta(days=100))


def test_verify_bundle_refuses_uncovered_names(pki):
    with pytest.raises(FleetcertError, match='^names: .*does not cover other.example.test'):
        cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']), pki['key_pem'],
                         names=['app.example.test', 'other.example.test'], now=NOW)


def test_signature_fallback_for_old_cryptography(pki):
    assert cd.crypto_verify_signature(pki['leaf'], pki['inter'])
    assert not cd.crypto_verify_signature(pki['leaf'], pki['root'])


@pytest.mark.parametrize('versions,keep,protect,expected', [
    (['a1', 'a2', 'a3'], 3, {'a3'}, []),
    (['a1', 'a2', 'a3', 'a4'], 3, {'a4', 'a3'}, ['a1']),
    (['a1', 'a2', 'a3', 'a4'], 2, {'a1', 'a4'}, ['a2', 'a3']),
    (['placeholder-z', 'a1', 'a2'], 2, {'a2', 'a1'}, ['placeholder-z']),
    (['a1', 'a2'], 1, {'a2'}, ['a1']),
])
def test_plan_prune(versions, keep, protect, expected):
    assert cd.plan_prune(versions, keep, protect) == expected


def test_tree_writes_a_version_and_switches_live(tmp_path, pki):
    tree = cd.SiteTree(str(tmp_path), 'app')
    assert tree.live_version() is None
    _leaf, _chain, _key, files = cd.verify_bundle(_pem(pki['leaf']), _pem(pki['inter']),
                                                  pki['key_pem'], now=NOW)
    tree.ensure_dirs()
    tree.write_version('v1', files)
    tree.switch_live('v1')
    assert tree.live_version() == 'v1'
    assert os.readlink(tree.live) == 'versions/v1'
    key_mode = stat.S_IMODE(os.stat(os.path.join(tree.versions_dir, 'v1', 'privkey.pem')).st_mode)
    assert key_mode == 0o600
    assert tree.same_content('v1', files)
    assert tree.read_cert('v1').serial_number == pki['leaf'].serial_number
    assert [n for n in os.listdir(tree.site_dir) if n.startswith(cd.TMP_PREFIX)] == []
    assert [n for n in os.listdir(tree.versions_dir) if n.startswith(cd.TMP_PREFIX)] == []


def test_tree_refuses_a_live_it_did_not_write(tmp_path):
    tree = cd.SiteTree(str(tmp_path), 'app')
    os.makedirs(tree.live)
    with pytest.raises(FleetcertError, match='not a symlink'):
        tree.live_version()
    os.rmdir(tree.live)
    os.symlink('/etc/ssl', tree.live)
    with pytest.raises(FleetcertError, match='not to versions/<version>'):
        tree.live_version()


def test_tree_treats_a_dangling_live_as_none(tmp_path):
    tree = cd.SiteTree(str(tmp_path), 'app')
    tree.ensure_dirs()
    os.symlink('versions/gone', tree.live)
    assert tree.live_version() is None


def test_tree_removes_stale_temporaries(tmp_path):
    tree = cd.SiteTree(str(tmp_path), 'app')
    tree.ensure_dirs()
    os.makedirs(os.path.join(tree.versions_dir, cd.TMP_PREFIX + 'v9.abc'))
    os.symlink('versions/v9', os.path.join(tree.site_dir, cd.TMP_PREFIX + 'live.x'))
    tree.remove_stale_temporaries()
    assert os.listdir(tree.versions_dir) == []
    assert os.listdir(tree.site_dir) == ['versions']
