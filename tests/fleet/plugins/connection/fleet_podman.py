# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test bed only: containers.podman.podman with pipelining, for the local fleet.

A real fleet is reached over SSH, where pipelining and ControlPersist make a
module one round trip on an open connection. containers.podman.podman cannot
pipeline (its `podman exec` does not pass stdin), so every module costs six
`podman` processes (mount, echo ~, mkdir, chmod, python, rm), and on a 2-core
test machine those, not the playbooks, dominate the time of a fleet run.
This subclass sends the module on stdin of one `podman exec -i` (what
pipelining means) and mounts the container only when a file is copied.
tests/fleet/fleetlib.py writes inventories that use it (ANSIBLE_CONNECTION_PLUGINS
points here); the molecule scenarios keep containers.podman.podman.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    author: fleetcert maintainers (@fleetcert)
    name: fleet_podman
    short_description: containers.podman.podman with pipelining (fleetcert test bed)
    description:
        - Like containers.podman.podman, but modules are sent on the standard input
          of one C(podman exec -i) when pipelining is on.
    options:
      remote_addr:
        description:
          - The ID of the container you want to access.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description:
          - User inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description:
          - Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description:
          - Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    """containers.podman.podman, pipelining, no mount unless a file is copied."""

    transport = 'fleet_podman'
    has_pipelining = True

    def _connect(self):
        # No `podman mount` per task: put_file/fetch_file fall back to `podman cp`.
        ConnectionBase._connect(self)  # pylint: disable=protected-access
        self._mount_point = None
        self._connected = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ['exec']
        if in_data is not None:
            args.append('-i')
        if self.user:
            args.extend(('--user', self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors='surrogate_or_strict')), in_data)
