#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: acme_challenge
short_description: Place or remove ACME HTTP-01 challenge files in a web root
version_added: 0.1.0
description:
  - Writes each HTTP-01 key authorization to C(<webroot>/.well-known/acme-challenge/<token>)
    so the web server answers the CA's validation request, or removes those files again.
  - Run it on B(every) node behind the load balancer before answering the challenge;
    the CA validates from several vantage points and each request may reach a different node.
  - Every token and key authorization is validated before any file is touched, so a
    hostile or broken token (C(../x), C(a/b)) can never write outside the challenge directory,
    and a bad entry leaves the node exactly as it was.
  - Files are written atomically with mode C(0644); missing directories are created with C(0755).
author:
  - fleetcert maintainers (@fleetcert)
options:
  webroot:
    description:
      - Absolute path of the directory the web server serves C(/.well-known/acme-challenge/) from
        (the parent of C(.well-known)). Created when missing.
    type: path
    required: true
  challenges:
    description:
      - The challenges to place or remove, for example the C(challenges) list returned by
        M(fleetcert.meteor.acme_order) with O(fleetcert.meteor.acme_order#module:state=pending).
      - Each item is a dictionary with C(token) (the ACME token, base64url) and, for
        O(state=present), C(key_authorization) (C(<token>.<account key thumbprint>)).
        Other keys (C(name), C(path), ...) are accepted and ignored.
      - Required unless O(state=absent) and O(purge=true).
    type: list
    elements: dict
  state:
    description:
      - V(present) writes the challenge files, V(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent) and no O(challenges), remove every file in the challenge
        directory, for example to clean up after an interrupted run.
      - Subdirectories are left alone.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports which challenge files would be written or removed without touching them.
  diff_mode:
    support: full
    description: Shows each challenge file before and after.
notes:
  - Only the standard library is needed on the node.
seealso:
  - module: fleetcert.meteor.acme_order
  - name: RFC 8555 section 8.3 (HTTP challenge)
    description: How the CA fetches the key authorization.
    link: https://www.rfc-editor.org/rfc/rfc8555#section-8.3
'''

EXAMPLES = r'''
- name: Publish the pending challenges on every web node
  fleetcert.meteor.acme_challenge:
    webroot: /var/www/acme
    challenges: "{{ hostvars['localhost'].order.challenges }}"
    state: present

- name: Remove them once the order is valid
  fleetcert.meteor.acme_challenge:
    webroot: /var/www/acme
    challenges: "{{ hostvars['localhost'].order.challenges }}"
    state: absent

- name: Clean up every leftover challenge file
  fleetcert.meteor.acme_challenge:
    webroot: /var/www/acme
    state: absent
    purge: true
'''

RETURN = r'''
challenge_dir:
  description: The directory holding the challenge files.
  returned: always
  type: str
  sample: /var/www/acme/.well-known/acme-challenge
files:
  description: Challenge files written (O(state=present)) or removed (O(state=absent)) by this run,
    or that would have been in check mode.
  returned: always
  type: list
  elements: str
  sample: [/var/www/acme/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0]
'''

import os
import re
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.module_utils.six import string_types

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.files import (
    atomic_write,
    ensure_directory,
    read_regular_file,
    would_change,
)
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import validate_token

CHALLENGE_SUBDIR = os.path.join('.well-known', 'acme-challenge')
FILE_MODE = 0o644
DIR_MODE = 0o755

# RFC 8555 section 8.1: key authorization = token "." base64url(SHA-256 JWK
# thumbprint); a SHA-256 digest is 43 base64url characters.
_THUMBPRINT_RE = re.compile(r'^[A-Za-z0-9_-]{43}\Z')


def validate_challenges(challenges, need_key_authorization):
    """Return [(token, key_authorization)] or raise naming ``challenges[i].<key>``."""
    result = []
    seen = {}
    for index, item in enumerate(challenges):
        where = 'challenges[%d]' % index
        if not isinstance(item, dict):
            raise FleetcertError('%s: must be a dictionary with token and key_authorization' % where)
        token = validate_token(item.get('token'), option='%s.token' % where)
        key_authorization = item.get('key_authorization')
        if need_key_authorization or key_authorization is not None:
            option = '%s.key_authorization' % where
            if not isinstance(key_authorization, string_types):
                raise FleetcertError('%s: required, a string <token>.<thumbprint>' % option)
            prefix = token + '.'
            if not key_authorization.startswith(prefix):
                raise FleetcertError(
                    '%s: does not belong to challenges[%d].token: it must start with %r'
                    % (option, index, prefix))
            if not _THUMBPRINT_RE.match(key_authorization[len(prefix):]):
                raise FleetcertError(
                    '%s: the part after the token must be a base64url SHA-256 account key '
                    'thumbprint (43 characters)' % option)
        if token in seen and seen[token] != key_authorization:
            raise FleetcertError(
                '%s.token: %r appears twice with different key authorizations' % (where, token))
        if token not in seen:
            seen[token] = key_authorization
            result.append((token, key_authorization))
    return result


def _file_diff(path, before, after):
    return {
        'before_header': path,
        'after_header': path,
        'before': to_text(before, errors='surrogate_or_strict') if before is not None else '',
        'after': after if after is not None else '',
    }


def _present(module, challenge_dir, challenges):
    changed_files = []
    diffs = []
    for token, key_authorization in challenges:
        path = os.path.join(challenge_dir, token)
        data = to_bytes(key_authorization)
        if not would_change(path, data, FILE_MODE):
            continue
        changed_files.append(path)
        if module._diff:
            diffs.append(_file_diff(path, read_regular_file(path), key_authorization))
    if changed_files and not module.check_mode:
        ensure_directory(challenge_dir, DIR_MODE)
        for token, key_authorization in challenges:
            atomic_write(os.path.join(challenge_dir, token), to_bytes(key_authorization), FILE_MODE)
    return changed_files, diffs


def _removable(path):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return not stat.S_ISDIR(st.st_mode)


def _absent(module, challenge_dir, paths):
    removed = []
    diffs = []
    for path in paths:
        if not _removable(path):
            continue
        removed.append(path)
        if module._diff:
            diffs.append(_file_diff(path, read_regular_file(path), None))
        if not module.check_mode:
            os.unlink(path)
    return removed, diffs


def _purge_paths(challenge_dir):
    try:
        names = sorted(os.listdir(challenge_dir))
    except OSError:
        return []
    return [os.path.join(challenge_dir, name) for name in names]


def run(module):
    params = module.params
    webroot = params['webroot']
    state = params['state']
    challenges = params['challenges']
    if not os.path.isabs(webroot):
        raise FleetcertError('webroot: %r must be an absolute path' % webroot)
    if params['purge']:
        if state != 'absent':
            raise FleetcertError('purge: only valid with state=absent')
        if challenges:
            raise FleetcertError('purge: removes every challenge file; do not also give challenges')
    elif challenges is None:
        raise FleetcertError('challenges: required unless state=absent and purge=true')
    validated = validate_challenges(challenges or [], need_key_authorization=(state == 'present'))

    challenge_dir = os.path.join(os.path.normpath(webroot), CHALLENGE_SUBDIR)
    if state == 'present':
        changed_files, diffs = _present(module, challenge_dir, validated)
    elif params['purge']:
        changed_files, diffs = _absent(module, challenge_dir, _purge_paths(challenge_dir))
    else:
        paths = [os.path.join(challenge_dir, token) for token, _dummy in validated]
        changed_files, diffs = _absent(module, challenge_dir, paths)
    result = {'changed': bool(changed_files), 'files': changed_files, 'challenge_dir': challenge_dir}
    if module._diff:
        result['diff'] = diffs
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            webroot=dict(type='path', required=True),
            challenges=dict(type='list', elements='dict'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            purge=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except FleetcertError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='writing challenge files under %s failed: %s'
                         % (module.params['webroot'], to_native(exc)))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
