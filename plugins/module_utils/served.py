# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The certificate a TLS server presents, as a client sees it.

A node's disk can be newer than what its web server serves (a run killed
between the switch of ``live`` and the reload): only a handshake tells.
Standard library ``ssl`` plus ``cryptography``, so it runs on every node.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError


def served_certificate(host, port, server_name=None, timeout=10):
    """The leaf certificate presented at ``host:port`` for SNI ``server_name``.

    Not verified: the question is which certificate is served, not whether a
    browser would trust it (a placeholder or an expired one must be seen too).
    Raises FleetcertError saying where and why the handshake failed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    where = '%s:%d' % (host, port) if ':' not in host else '[%s]:%d' % (host, port)
    if server_name:
        where += ' (SNI %s)' % server_name
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=server_name or None) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
        raise FleetcertError('no certificate could be read from %s: %s' % (where, exc))
    if not der:
        raise FleetcertError('%s presented no certificate' % where)
    return crypto.load_certificate(ssl.DER_cert_to_PEM_cert(der), 'the certificate served at %s' % where)
