# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for integration tests: real Pebble, real podman containers, real ansible-playbook.

See fleetcert_testbed.py for the objects they return.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fleetcert_testbed as tb  # noqa: E402  (needs the path above)
from ca_proxy import CaProxy  # noqa: E402

# Extra Pebble instances use port bases above the session one, 4 ports each.
EXTRA_PEBBLES = 20


def _require_testbed():
    env = tb.testbed_env()
    missing = []
    if not os.path.exists(env['FLEETCERT_PYTHON']):
        missing.append('venv %s' % env['FLEETCERT_VENV'])
    if not shutil.which('pebble'):
        missing.append('pebble')
    for kind in ('base', 'web'):
        if tb.podman('image', 'exists', tb.image(kind), check=False).returncode != 0:
            missing.append('image %s' % tb.image(kind))
    if missing:
        pytest.exit('test bed not set up (missing: %s): run `make setup`' % ', '.join(missing), returncode=4)


@pytest.fixture(scope='session')
def testbed_session_id():
    _require_testbed()
    return tb.new_session_id()


@pytest.fixture(scope='session')
def pebble_port_base():
    return int(os.environ.get('FLEETCERT_PEBBLE_PORT_BASE', '14500'))


@pytest.fixture(scope='session')
def pebble(testbed_session_id, pebble_port_base):
    """The session's Pebble (default settings); stopped at the end of the session.

    On FLEETCERT_PEBBLE_PORT_BASE, or 100, 200, ... above it when another
    session holds those ports.
    """
    instance = tb.start_pebble([pebble_port_base + 100 * k for k in range(6)])
    yield instance
    instance.stop()


@pytest.fixture
def pebble_factory(pebble):
    """Start extra Pebble instances: pebble_factory(env={'PEBBLE_WFE_NONCEREJECT': '50'}).

    eab={kid: base64url MAC key} makes the instance require External Account Binding.

    Each gets its own port base and is stopped when the test ends.
    """
    started = []

    def factory(env=None, eab=None):
        session_base = pebble.port_base
        instance = tb.start_pebble([session_base + 4 * k for k in range(1, EXTRA_PEBBLES + 1)],
                                   env=env, eab=eab, taken={p.port_base for p in started})
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()


@pytest.fixture
def ca_proxy():
    """Factory: ca_proxy(pebble, [ca_proxy.Rule(...)]) -> started CaProxy; stopped at test end."""
    started = []

    def factory(ca, rules):
        proxy = CaProxy(ca, rules).start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope='session')
def podman_network(testbed_session_id):
    """One podman network for the session; its containers are removed with it."""
    net = tb.Network('tb-%s-net' % testbed_session_id, testbed_session_id).create()
    yield net
    net.remove()


@pytest.fixture
def container(podman_network, testbed_session_id):
    """Factory: container(image=None, role='node', **run_container kwargs) -> Container.

    Defaults to the base image on the session network; removed when the test ends.
    """
    made = []

    def factory(image=None, role='node', **kwargs):
        name = tb.unique_name(testbed_session_id, role)
        made.append(name)
        return tb.run_container(name, image or tb.image('base'), network=podman_network.name,
                                session_id=testbed_session_id, **kwargs)

    yield factory
    for name in made:
        tb.Container(name).remove()


@pytest.fixture
def web_host(container):
    """Factory: web_host(aliases=()) -> Container running nginx on port 80.

    /.well-known/acme-challenge/ is served from /var/www/acme (tb.ACME_WEBROOT),
    everything else is 404. Removed when the test ends.
    """
    def factory(aliases=(), webroot=tb.ACME_WEBROOT):
        host = container(image=tb.image('web'), role='web', aliases=aliases)
        return tb.start_web(host, webroot)

    return factory


@pytest.fixture
def fleet_host(container):
    """Factory: fleet_host(aliases=()) -> privileged fleetcert-host container.

    Nested podman works inside it and sees the base and node images (read-only
    image store, see scripts/build-images.sh). Removed when the test ends.
    """
    def factory(aliases=()):
        return container(image=tb.image('host'), role='host', aliases=aliases, privileged=True,
                         volumes=[tb.image_store_volume()])

    return factory


@pytest.fixture(scope='session')
def run_playbook():
    """run_playbook(path, inventory=dict|path, extra_vars=dict, check_mode=, diff=, ...) -> PlaybookResult."""
    return tb.run_playbook


@pytest.fixture(scope='session')
def make_inventory():
    """make_inventory({'web': [container, ...]}) -> inventory dict with localhost (venv python)."""
    return tb.make_inventory
