#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: cert_deploy
short_description: Install a certificate on a node as one atomic, versioned unit
version_added: 0.1.0
description:
  - The only writer of the certificate tree C(<cert_root>/<site>/) that nginx reads.
  - Every certificate is written to its own directory
    C(<cert_root>/<site>/versions/<version>/) holding C(privkey.pem) (mode 0600),
    C(cert.pem), C(chain.pem) and C(fullchain.pem). The directory is written under a
    temporary name and renamed into place, then the symlink C(<cert_root>/<site>/live)
    is switched to it atomically (new symlink under a temporary name, then rename), so
    a reader never sees a half-written certificate or a key that does not belong to
    the certificate next to it.
  - Before the switch the private key is checked against the certificate and the
    chain against the certificate (each certificate signed by the next); a truncated,
    expired or mismatched certificate or key is refused and C(live) is left untouched.
  - O(state=present) installs a certificate, O(state=placeholder) installs a
    self-signed certificate only when no certificate is live yet (so nginx can start on
    a fresh host), O(state=rollback) points C(live) back at an existing version.
  - Old versions beyond O(keep_versions) are removed; the live one is always kept.
author:
  - fleetcert maintainers (@fleetcert)
requirements:
  - cryptography >= 38
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing anything.
  diff_mode:
    support: full
    description: Shows the version C(live) points to before and after.
options:
  cert_root:
    description: Directory holding one subdirectory per site.
    type: path
    default: /etc/fleetcert/certs
  site:
    description:
      - Name of the site; the certificate tree is C(<cert_root>/<site>/).
      - Letters, digits, C(.), C(_) and C(-), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) installs O(certificate) with O(chain) and O(private_key_content).
      - V(placeholder) installs a self-signed certificate for O(names) if, and only if,
        no certificate is live; otherwise it does nothing.
      - V(rollback) points C(live) at the existing version O(version).
    type: str
    choices: [present, placeholder, rollback]
    default: present
  certificate:
    description:
      - The leaf certificate, PEM. May be a full chain (leaf first); the certificates
        after the leaf are then used as the chain unless O(chain) is given.
      - Required with O(state=present).
    type: str
  chain:
    description:
      - The intermediate certificates, PEM, each one signed by the next.
      - Verified against O(certificate) before anything is switched.
    type: str
  private_key_content:
    description:
      - The private key of O(certificate), PEM. Never logged.
      - Required with O(state=present).
    type: str
  names:
    description:
      - With O(state=placeholder), the DNS names of the self-signed certificate (required).
      - With O(state=present), optional; the certificate must then cover every name.
    type: list
    elements: str
  version:
    description: With O(state=rollback), the version to point C(live) at (a name under C(versions/)).
    type: str
  keep_versions:
    description:
      - How many versions to keep, including the live one. Older ones are removed after a switch.
      - Keep at least 2 so the previous certificate stays available for O(state=rollback).
    type: int
    default: 3
  placeholder_days:
    description: Validity of the self-signed placeholder certificate, in days.
    type: int
    default: 30
notes:
  - Private keys are written with mode 0600 and never returned.
  - A version is named C(<notBefore as UTC YYYYmmddHHMMSS>-<first 16 hex digits of the serial>);
    placeholders are prefixed with C(placeholder-).
  - Runs on the same site wait for each other (a lock file C(<cert_root>/.<site>.lock)).
seealso:
  - module: fleetcert.meteor.cert_info
'''

EXAMPLES = r'''
- name: Install the new certificate
  fleetcert.meteor.cert_deploy:
    site: app
    certificate: "{{ order.certificate }}"
    chain: "{{ order.chain }}"
    private_key_content: "{{ order.private_key }}"
    keep_versions: 3
  register: deployed

- name: Let nginx start on a fresh host
  fleetcert.meteor.cert_deploy:
    site: app
    state: placeholder
    names: [app.example.com]

- name: Go back to the previous certificate
  fleetcert.meteor.cert_deploy:
    site: app
    state: rollback
    version: "{{ deployed.previous_version }}"
  when: deployed.previous_version is not none
'''

RETURN = r'''
previous_version:
  description: The version C(live) pointed to before, or null if none was live.
  returned: always
  type: str
  sample: 20260105120000-fa01c2d43e5b9d10
version:
  description: The version C(live) points to now (in check mode, would point to). Null if none.
  returned: always
  type: str
  sample: 20260305120000-0b3d8d8f5e1c7a22
previous_serial:
  description: Serial number (lower-case hex) of the certificate that was live before, or null.
  returned: always
  type: str
  sample: fa01c2d43e5b9d10c2
serial:
  description: Serial number (lower-case hex) of the live certificate now, or null.
  returned: always
  type: str
  sample: 0b3d8d8f5e1c7a2244
not_after:
  description: Expiry of the live certificate now, ISO 8601 UTC, or null.
  returned: always
  type: str
  sample: '2026-06-03T12:00:00Z'
placeholder:
  description: Whether the live certificate is a self-signed placeholder.
  returned: always
  type: bool
live:
  description: Path of the C(live) symlink.
  returned: always
  type: str
  sample: /etc/fleetcert/certs/app/live
versions:
  description: The versions present after the run, oldest first.
  returned: always
  type: list
  elements: str
pruned:
  description: The versions removed by this run (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
'''

import datetime
import fcntl
import os
import re
import shutil
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.files import atomic_write, ensure_directory, fsync_dir

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import normalize_names

# Names that become path components: no separators, no dot-only names, so a
# value can never climb out of cert_root.
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
PLACEHOLDER_PREFIX = 'placeholder-'
FILES = ('privkey.pem', 'cert.pem', 'chain.pem', 'fullchain.pem')
TMP_PREFIX = '.tmp-'


def validate_name(value, option):
    if not isinstance(value, str) or not NAME_RE.match(value) or '..' in value:
        raise FleetcertError(
            '%s: %r is not a valid name: use letters, digits, ".", "_" and "-", '
            'starting with a letter or digit, at most 128 characters' % (option, value))
    return value


def not_before(cert):
    return crypto.not_valid_before(cert)


def not_after(cert):
    return crypto.not_valid_after(cert)


def iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def serial_hex(cert):
    return '%x' % cert.serial_number


def version_id(cert, placeholder=False):
    """Sortable by issue time, unique per certificate, safe as a path component."""
    vid = '%s-%s' % (not_before(cert).strftime('%Y%m%d%H%M%S'), serial_hex(cert)[:16])
    return PLACEHOLDER_PREFIX + vid if placeholder else vid


def _is_issued_by(cert, issuer):
    if cert.issuer != issuer.subject:
        return False
    verify = getattr(cert, 'verify_directly_issued_by', None)
    if verify is not None:
        try:
            verify(issuer)
        except Exception:  # pylint: disable=broad-except
            return False
        return True
    return crypto_verify_signature(cert, issuer)


def crypto_verify_signature(cert, issuer):
    """Signature check for cryptography < 40, which lacks verify_directly_issued_by."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.exceptions import InvalidSignature
    public_key = issuer.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                              padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                              ec.ECDSA(cert.signature_hash_algorithm))
        else:
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        return False
    return True


def verify_bundle(certificate, chain, private_key_content, names=None, now=None):
    """Parse and cross-check what is about to be installed.

    Returns (leaf, chain_certs, key, files) where files maps each file name of a
    version directory to its bytes. Raises FleetcertError naming the option at
    fault; nothing is written before this has passed.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not certificate or not certificate.strip():
        raise FleetcertError('certificate: required with state=present')
    if not private_key_content or not private_key_content.strip():
        raise FleetcertError('private_key_content: required with state=present')
    given = crypto.split_pem_chain(certificate, 'certificate')
    leaf = given[0]
    if chain and chain.strip():
        chain_certs = crypto.split_pem_chain(chain, 'chain')
    else:
        chain_certs = given[1:]
    key = crypto.load_private_key(private_key_content, 'private_key_content')
    if not crypto.key_matches_certificate(key, leaf):
        raise FleetcertError(
            'private_key_content: the private key does not belong to the certificate '
            '(serial %s); nothing was changed' % serial_hex(leaf))
    previous = leaf
    for i, issuer in enumerate(chain_certs):
        if not _is_issued_by(previous, issuer):
            raise FleetcertError(
                'chain[%d]: does not sign the %s before it (%s); nothing was changed'
                % (i, 'certificate' if i == 0 else 'chain certificate',
                   previous.subject.rfc4514_string()))
        previous = issuer
    if not_after(leaf) <= now:
        raise FleetcertError('certificate: expired on %s (serial %s); nothing was changed'
                             % (iso(not_after(leaf)), serial_hex(leaf)))
    if names:
        covered = set(n.lower() for n in crypto.certificate_names(leaf))
        missing = [n for n in normalize_names(names, 'names') if n not in covered]
        if missing:
            raise FleetcertError('names: the certificate (serial %s) does not cover %s'
                                 % (serial_hex(leaf), ', '.join(missing)))
    leaf_pem = to_bytes(crypto.certificate_to_pem(leaf))
    chain_pem = b''.join(to_bytes(crypto.certificate_to_pem(c)) for c in chain_certs)
    files = {
        'privkey.pem': to_bytes(crypto.private_key_to_pem(key)),
        'cert.pem': leaf_pem,
        'chain.pem': chain_pem,
        'fullchain.pem': leaf_pem + chain_pem,
    }
    return leaf, chain_certs, key, files


def plan_prune(versions, keep, protect):
    """Which versions to delete: the oldest ones beyond ``keep``, never one in ``protect``.

    Version names sort by issue time, placeholders (always older than any real
    certificate they were replaced by) first.
    """
    def order(v):
        return (0 if v.startswith(PLACEHOLDER_PREFIX) else 1, v)
    ordered = sorted(versions, key=order)
    excess = len(ordered) - keep
    doomed = []
    for v in ordered:
        if excess <= 0:
            break
        if v in protect:
            continue
        doomed.append(v)
        excess -= 1
    return doomed


class SiteTree(object):
    """The on-disk layout of one site; every write goes through here."""

    def __init__(self, cert_root, site):
        self.root = cert_root
        self.site_dir = os.path.join(cert_root, site)
        self.versions_dir = os.path.join(self.site_dir, 'versions')
        self.live = os.path.join(self.site_dir, 'live')

    def live_version(self):
        """The version live points to, or None (missing, or pointing at a removed version)."""
        if not os.path.lexists(self.live):
            return None
        if not os.path.islink(self.live):
            raise FleetcertError('%s is not a symlink, so it was not written by cert_deploy; '
                                 'move it away first' % self.live)
        target = os.readlink(self.live)
        parts = target.split('/')
        if len(parts) != 2 or parts[0] != 'versions' or not NAME_RE.match(parts[1]):
            raise FleetcertError('%s points to %r, not to versions/<version>, so it was not '
                                 'written by cert_deploy; remove it first' % (self.live, target))
        if not os.path.isfile(os.path.join(self.versions_dir, parts[1], 'fullchain.pem')):
            return None
        return parts[1]

    def versions(self):
        if not os.path.isdir(self.versions_dir):
            return []
        return sorted(v for v in os.listdir(self.versions_dir)
                      if NAME_RE.match(v) and os.path.isdir(os.path.join(self.versions_dir, v)))

    def read(self, version, name):
        with open(os.path.join(self.versions_dir, version, name), 'rb') as f:
            return f.read()

    def read_cert(self, version):
        """The leaf of a version, or None if it cannot be read."""
        if not version:
            return None
        try:
            return crypto.load_certificate(to_text(self.read(version, 'cert.pem')), 'cert.pem')
        except (IOError, OSError, FleetcertError):
            return None

    def same_content(self, version, files):
        try:
            return all(self.read(version, name) == data for name, data in files.items())
        except (IOError, OSError):
            return False

    def ensure_dirs(self):
        ensure_directory(self.versions_dir, 0o755)

    def write_version(self, version, files):
        """Write a complete version directory under a temporary name, then rename it."""
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX + version + '.', dir=self.versions_dir)
        try:
            os.chmod(tmp, 0o755)
            for name in FILES:
                atomic_write(os.path.join(tmp, name), files[name],
                             0o600 if name == 'privkey.pem' else 0o644)
            # Read back before publishing: a full disk or a short write must not
            # reach the directory nginx is pointed at.
            for name in FILES:
                with open(os.path.join(tmp, name), 'rb') as f:
                    if f.read() != files[name]:
                        raise FleetcertError('writing %s/%s: read-back differs (disk full?); '
                                             'nothing was changed' % (tmp, name))
            fsync_dir(tmp)
            os.rename(tmp, os.path.join(self.versions_dir, version))
            fsync_dir(self.versions_dir)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def switch_live(self, version):
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + 'live.', dir=self.site_dir)
        os.close(fd)
        os.unlink(tmp)
        try:
            os.symlink('versions/' + version, tmp)
            os.rename(tmp, self.live)
        except Exception:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(self.site_dir)

    def remove_version(self, version):
        shutil.rmtree(os.path.join(self.versions_dir, version))

    def remove_stale_temporaries(self):
        # Left behind only by a run that was killed mid-write.
        for parent in (self.site_dir, self.versions_dir):
            if not os.path.isdir(parent):
                continue
            for name in os.listdir(parent):
                if name.startswith(TMP_PREFIX):
                    path = os.path.join(parent, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)


def _describe(version):
    return 'live -> versions/%s\n' % version if version else 'live: (none)\n'


class Deployer(object):

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.tree = SiteTree(module.params['cert_root'], module.params['site'])
        self.check = module.check_mode
        self.pruned = []

    def run(self):
        if self.check:
            return self._run()
        # Two runs on one node (an operator and a schedule) must not interleave:
        # one could prune or clean up what the other is writing.
        ensure_directory(self.tree.root, 0o755)
        fd = os.open(os.path.join(self.tree.root, '.%s.lock' % self.params['site']),
                     os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._run()
        finally:
            os.close(fd)

    def _run(self):
        state = self.params['state']
        previous = self.tree.live_version()
        if state == 'present':
            version, cert = self.present(previous)
        elif state == 'placeholder':
            version, cert = self.placeholder(previous)
        else:
            version, cert = self.rollback(previous)
        changed = version != previous
        # Pruning only follows a switch: "changed" means "live changed", and a
        # run that switches nothing must leave the tree as it found it.
        if changed:
            self.prune(version, previous)
        return self.result(previous, version, cert, changed)

    def _publish(self, version, files):
        if self.check:
            return
        self.tree.ensure_dirs()
        self.tree.remove_stale_temporaries()
        self.tree.write_version(version, files)
        self.tree.switch_live(version)

    def present(self, previous):
        p = self.params
        leaf, _chain, _key, files = verify_bundle(
            p['certificate'], p['chain'], p['private_key_content'], names=p['names'])
        base = version_id(leaf)
        existing = set(self.tree.versions())
        # A certificate seen before with other content (another chain) gets a
        # suffixed name, so a version directory never changes once published.
        for version in [base] + ['%s.%d' % (base, n) for n in range(1, 100)]:
            if version not in existing:
                self._publish(version, files)
                return version, leaf
            if self.tree.same_content(version, files):
                if version != previous and not self.check:
                    self.tree.switch_live(version)
                return version, leaf
        raise FleetcertError('too many versions named %s.*: clean up %s'
                             % (base, self.tree.versions_dir))

    def placeholder(self, previous):
        p = self.params
        if previous is not None:
            return previous, self.tree.read_cert(previous)
        if p['placeholder_days'] < 1:
            raise FleetcertError('placeholder_days: must be at least 1, got %d' % p['placeholder_days'])
        key = crypto.generate_private_key('ec256')
        cert = crypto.make_self_signed(key, normalize_names(p['names'], 'names'), p['placeholder_days'])
        leaf_pem = to_bytes(crypto.certificate_to_pem(cert))
        files = {
            'privkey.pem': to_bytes(crypto.private_key_to_pem(key)),
            'cert.pem': leaf_pem,
            'chain.pem': b'',
            'fullchain.pem': leaf_pem,
        }
        version = version_id(cert, placeholder=True)
        self._publish(version, files)
        return version, cert

    def rollback(self, previous):
        version = self.params['version']
        if version not in self.tree.versions():
            raise FleetcertError('version: %s does not exist under %s (have: %s)'
                                 % (version, self.tree.versions_dir,
                                    ', '.join(self.tree.versions()) or 'none'))
        try:
            cert_pem = to_text(self.tree.read(version, 'cert.pem'))
            chain_pem = to_text(self.tree.read(version, 'chain.pem'))
            key_pem = to_text(self.tree.read(version, 'privkey.pem'))
        except (IOError, OSError) as e:
            raise FleetcertError('version: %s is incomplete: %s' % (version, to_native(e)))
        leaf = crypto.load_certificate(cert_pem, 'version %s cert.pem' % version)
        if version == previous:
            return version, leaf
        # The same checks as for a new certificate except expiry: going back to
        # an expired certificate is the operator's call.
        verify_bundle(cert_pem, chain_pem, key_pem,
                      now=not_after(leaf) - datetime.timedelta(seconds=1))
        if not self.check:
            self.tree.switch_live(version)
        return version, leaf

    def prune(self, version, previous):
        keep = self.params['keep_versions']
        versions = set(self.tree.versions())
        versions.add(version)
        # The previous version is what a rollback returns to; it goes only when
        # the operator asked to keep a single version.
        protect = set(v for v in (version, previous if keep > 1 else None) if v)
        self.pruned = plan_prune(versions, keep, protect)
        if not self.check:
            for v in self.pruned:
                self.tree.remove_version(v)

    def result(self, previous, version, cert, changed):
        prev_cert = self.tree.read_cert(previous)
        remaining = set(self.tree.versions()) - set(self.pruned)
        if version:
            remaining.add(version)
        result = dict(
            changed=changed,
            previous_version=previous,
            version=version,
            previous_serial=serial_hex(prev_cert) if prev_cert is not None else None,
            serial=serial_hex(cert) if cert is not None else None,
            not_after=iso(not_after(cert)) if cert is not None else None,
            placeholder=bool(version and version.startswith(PLACEHOLDER_PREFIX)),
            live=self.tree.live,
            versions=sorted(remaining),
            pruned=self.pruned,
        )
        if self.module._diff:
            result['diff'] = dict(before_header=self.tree.live, after_header=self.tree.live,
                                  before=_describe(previous), after=_describe(version))
        return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cert_root=dict(type='path', default='/etc/fleetcert/certs'),
            site=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'placeholder', 'rollback']),
            certificate=dict(type='str'),
            chain=dict(type='str'),
            private_key_content=dict(type='str', no_log=True),
            names=dict(type='list', elements='str'),
            version=dict(type='str'),
            keep_versions=dict(type='int', default=3),
            placeholder_days=dict(type='int', default=30),
        ),
        required_if=[
            ('state', 'present', ('certificate', 'private_key_content')),
            ('state', 'placeholder', ('names',)),
            ('state', 'rollback', ('version',)),
        ],
        supports_check_mode=True,
    )
    if not crypto.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'),
                         exception=crypto.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    try:
        validate_name(p['site'], 'site')
        if p['state'] == 'rollback':
            validate_name(p['version'], 'version')
        if p['keep_versions'] < 1:
            raise FleetcertError('keep_versions: must be at least 1, got %d' % p['keep_versions'])
        if not os.path.isabs(p['cert_root']):
            raise FleetcertError('cert_root: must be an absolute path, got %r' % p['cert_root'])
        result = Deployer(module).run()
    except FleetcertError as e:
        module.fail_json(msg=e.msg, **e.details)
    except (IOError, OSError) as e:
        module.fail_json(msg='cert_deploy on %s failed: %s' % (p['site'], to_native(e)),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
