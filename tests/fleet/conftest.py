# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the fleet suite: one local fleet (scripts/fleet.sh) per session.

The fleet is named by FLEETCERT_FLEET_NAME (default "proof": containers
fleet-proof-*), its Pebble uses ports FLEETCERT_FLEET_PORT_BASE (default 14900)
to +3. site.yml runs once per session; every test starts from a converged fleet
(all nodes serve one certificate that verifies against the running Pebble) and
leaves the fleet usable for the next. FLEETCERT_KEEP_FLEET=1 keeps the fleet
after the session (to look at it; `scripts/fleet.sh down --name proof` removes it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fleetlib  # noqa: E402  (needs the path above)
from fleetlib import tb  # noqa: E402

SSLYZE_VENV = os.path.join(fleetlib.ROOT, '.cache', 'sslyze-venv')
SSLYZE_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'requirements-sslyze.txt')


def pytest_configure(config):
    config.addinivalue_line('markers', 'restarts_ca: the test restarts the fleet\'s Pebble (a new CA); '
                            'such tests run last, so the others share one CA and need no extra run')


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
    items.sort(key=lambda item: item.get_closest_marker('restarts_ca') is not None)


def _require_testbed():
    env = tb.testbed_env()
    missing = [what for what, ok in (
        ('venv %s' % env['FLEETCERT_VENV'], os.path.exists(env['FLEETCERT_PYTHON'])),
        ('pebble', shutil.which('pebble')),
        ('image %s' % tb.image('host'), tb.podman('image', 'exists', tb.image('host'), check=False).returncode == 0),
    ) if not ok]
    if missing:
        pytest.exit('test bed not set up (missing: %s): run `make setup`' % ', '.join(missing), returncode=4)


@pytest.fixture(scope='session')
def fleet():
    """The session's fleet, with site.yml applied (nginx, the app, the first certificate)."""
    _require_testbed()
    instance = fleetlib.Fleet(name=os.environ.get('FLEETCERT_FLEET_NAME', 'proof'),
                              port_base=int(os.environ.get('FLEETCERT_FLEET_PORT_BASE', '14900')))
    instance.up()
    try:
        site = instance.playbook('site')
        assert site.rc == 0, 'site.yml failed on the fresh fleet\n' + site.summary()
        yield instance
    finally:
        if os.environ.get('FLEETCERT_KEEP_FLEET') != '1':
            instance.down()


@pytest.fixture
def work(tmp_path):
    return str(tmp_path)


def converge(fleet):
    """Pebble running with its default settings, every node serving one verified certificate.

    Returns the path of the issuing roots. Tests that restart or stop the CA
    leave the nodes with certificates of a former CA: one forced run fixes it.
    """
    pebble = fleet.pebble()
    if not fleet.pebble_running() or _pebble_settings_changed(fleet):
        fleet.restart_pebble()
    else:
        pebble.env = fleetlib._pebble_env(pebble)  # pylint: disable=protected-access
        pebble.add_a(fleet.domain, fleet.lb_ip)
    root = fleet.issuing_root()
    served = fleet.served_by_nodes(root)
    if len({s['serial'] for s in served.values()}) != 1 or not all(s['verified'] for s in served.values()):
        result = fleet.playbook('certificates', extra_vars={'fleetcert_force_renew': True})
        assert result.rc == 0, 'could not bring the fleet back to one certificate\n' + result.summary()
        served = fleet.served_by_nodes(root)
    assert len({s['serial'] for s in served.values()}) == 1, served
    assert all(s['verified'] for s in served.values()), served
    return root


def _pebble_settings_changed(fleet):
    """True when the fleet's Pebble runs with extra --env settings (a test's)."""
    path = os.path.join(fleetlib.ROOT, '.cache', 'pebble', fleet.pebble_name, 'settings')
    try:
        with open(path) as handle:
            return any(line.startswith('env=') and line.strip() != 'env=' for line in handle)
    except OSError:
        return True


@pytest.fixture
def converged(fleet):
    """The fleet, converged (see converge()); yields the issuing roots' path."""
    return converge(fleet)


@pytest.fixture(scope='session')
def sslyze():
    """Path of sslyze, installed pinned into .cache/sslyze-venv (not the test venv)."""
    python = os.path.join(SSLYZE_VENV, 'bin', 'python')
    stamp = os.path.join(SSLYZE_VENV, '.requirements')
    with open(SSLYZE_REQUIREMENTS) as handle:
        wanted = handle.read()
    current = None
    if os.path.exists(stamp):
        with open(stamp) as handle:
            current = handle.read()
    if current != wanted:
        if not os.path.exists(python):
            tb.run(['/usr/bin/python3', '-m', 'venv', SSLYZE_VENV])
        tb.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                '-r', SSLYZE_REQUIREMENTS], timeout=600)
        with open(stamp, 'w') as handle:
            handle.write(wanted)
    return os.path.join(SSLYZE_VENV, 'bin', 'sslyze')
