# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TLS configuration as a real scanner sees it: sslyze against the load balancer and
every node, with Pebble's issuing root as the only trust anchor."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from fleetlib import tb

SCANS = ['--certinfo', '--sslv2', '--sslv3', '--tlsv1', '--tlsv1_1', '--tlsv1_2', '--tlsv1_3',
         '--elliptic_curves', '--http_headers', '--heartbleed', '--robot', '--openssl_ccs',
         '--fallback', '--compression', '--reneg']
OLD_PROTOCOLS = ('ssl_2_0', 'ssl_3_0', 'tls_1_0', 'tls_1_1')


def strong_tls12(name):
    """Forward secret AEAD suites only (Mozilla intermediate for TLS 1.2)."""
    return name.startswith('TLS_ECDHE_') and ('_GCM_' in name or '_CHACHA20_POLY1305' in name)


def test_sslyze_finds_modern_tls_full_chain_and_hsts(fleet, converged, sslyze, work):
    targets = ['%s:443{%s}' % (fleet.domain, ip)
               for ip in [fleet.lb_ip] + [fleet.node_ip(n) for n in fleet.nodes]]
    out = os.path.join(work, 'sslyze.json')
    env = tb.testbed_env()
    for var in ('SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'):
        env.pop(var, None)
    proc = tb.run([sslyze, '--json_out=' + out, '--certinfo_ca_file', converged,
                   '--mozilla_config', 'intermediate'] + SCANS + targets,
                  check=False, env=env, timeout=300)
    print(proc.stdout[-1500:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.count('OK - Compliant') == len(targets), proc.stdout[-3000:]
    with open(out) as handle:
        results = json.load(handle)['server_scan_results']
    assert len(results) == len(targets)

    for server in results:
        where = server['server_location']['ip_address']
        assert server['connectivity_status'] == 'COMPLETED', (where, server['connectivity_error_trace'])
        scan = server['scan_result']
        for key, value in scan.items():
            assert value['status'] in ('COMPLETED', 'NOT_SCHEDULED'), (where, key, value.get('error_trace'))

        def accepted(protocol):
            return [s['cipher_suite']['name']
                    for s in scan[protocol + '_cipher_suites']['result']['accepted_cipher_suites']]

        for protocol in OLD_PROTOCOLS:
            assert accepted(protocol) == [], (where, protocol, accepted(protocol))
        assert accepted('tls_1_3'), (where, 'TLS 1.3 must be offered')
        assert accepted('tls_1_2'), (where, 'TLS 1.2 must be offered')
        weak = [s for s in accepted('tls_1_2') if not strong_tls12(s)]
        assert weak == [], (where, 'weak TLS 1.2 cipher suites', weak)

        # Full chain: leaf + intermediate sent, verified up to the supplied root only.
        deployment = scan['certificate_info']['result']['certificate_deployments'][0]
        assert len(deployment['received_certificate_chain']) == 2, where
        assert not deployment['received_chain_contains_anchor_certificate'], where
        assert deployment['received_chain_has_valid_order'], where
        trusted = [p for p in deployment['path_validation_results']
                   if p['verified_certificate_chain'] is not None]
        assert [p['trust_store']['name'] for p in trusted] == ['Supplied CA file'], (where, trusted)
        assert len(trusted[0]['verified_certificate_chain']) == 3, where
        leaf = deployment['received_certificate_chain'][0]
        assert fleet.domain in json.dumps(leaf['subject_alternative_name']), (where, leaf['subject_alternative_name'])

        assert not scan['heartbleed']['result']['is_vulnerable_to_heartbleed'], where
        assert not scan['openssl_ccs_injection']['result']['is_vulnerable_to_ccs_injection'], where
        assert not scan['tls_compression']['result']['supports_compression'], where

        hsts = scan['http_headers']['result']['strict_transport_security_header']
        assert hsts and hsts['max_age'] >= 31536000, (where, hsts)
