# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero downtime: a forced renewal of the whole fleet under steady load.

tools/loadgen.py sends HTTPS requests on keep-alive connections through the
load balancer and holds websockets open on the stand-in Meteor app while
certificates.yml orders, answers the challenges on every node, fans the new
certificate out and reloads nginx everywhere.

"After the switch" means connections opened after every node served the new
certificate (checked node by node once the playbook, and so every reload, had
finished). Connections opened before keep the certificate they negotiated
until they reconnect; that is TLS, not a failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import fleetlib

WEBSOCKETS = 12


def test_forced_renewal_under_load_drops_nothing(fleet, converged, work):
    orders = fleet.orders()
    run = fleetlib.renewal_under_load(fleet, work, connections=4, interval=0.02,
                                      requests_per_connection=40, websockets=WEBSOCKETS,
                                      ws_interval=0.5)
    summary = run['summary']
    report = fleetlib.load_table(summary)
    with open(os.path.join(work, 'summary.json'), 'w') as handle:
        json.dump(summary, handle, indent=1)
    print('\nForced renewal under load (%s):\n%s\nwebsockets: %s'
          % (fleet.domain, report, json.dumps(summary['websockets'])))

    assert run['playbook'].rc == 0, run['playbook'].summary()
    assert fleet.orders() == orders + 1, 'one ACME order for the whole fleet'
    new = set(run['new_serials'].values())
    old = set(run['old_serials'].values())
    assert len(new) == 1 and not new & old, (run['old_serials'], run['new_serials'])
    new_serial = new.pop()

    # Load really ran in every phase, so the zeros below mean something.
    for name, phase in summary['phases'].items():
        assert phase['requests'] >= 50, (name, report)
    assert summary['failed'] == 0, 'failed requests:\n%s\n%s' % (report, summary['failures'])

    # Every response on a connection opened after the switch: the new certificate.
    assert summary['connections_after_switch'] >= 10, summary
    assert summary['responses_on_connections_after_switch'] >= 100, summary
    assert summary['serials_after_switch'] == [new_serial], summary['serials_after_switch']
    # Before the renewal started, only the old certificate was served.
    assert set(summary['phases']['before']['serials']) == old, report

    ws = summary['websockets']
    assert ws['opened'] == WEBSOCKETS, ws
    assert ws['dropped'] == [], ws
    # Each websocket still echoed after the switch, and closed with a handshake:
    # the old nginx workers kept them through the reload.
    assert ws['echoed_after_switch'] == WEBSOCKETS, ws
    assert ws['closed_cleanly'] == WEBSOCKETS, ws
    assert ws['serials'] == sorted(old), ws
