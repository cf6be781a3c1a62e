# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""served_certificate against a real TLS server on loopback that picks its certificate by SNI."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl
import threading

import pytest

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.served import served_certificate


def _context(tmp_path, name):
    key = crypto.generate_private_key('ec256')
    cert = crypto.make_self_signed(key, [name], days=1)
    cert_path, key_path = tmp_path / (name + '.crt'), tmp_path / (name + '.key')
    cert_path.write_bytes(crypto.certificate_to_pem(cert))
    key_path.write_bytes(crypto.private_key_to_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    return context, cert


@pytest.fixture
def tls_server(tmp_path):
    """A server presenting `default.test` unless the client asks for `other.test` by SNI."""
    default_context, default_cert = _context(tmp_path, 'default.test')
    other_context, other_cert = _context(tmp_path, 'other.test')
    seen = []

    def pick(tls, server_name, dummy):
        seen.append(server_name)
        if server_name == 'other.test':
            tls.context = other_context

    default_context.sni_callback = pick
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, dummy = listener.accept()
            except OSError:
                return
            try:
                with default_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {'port': listener.getsockname()[1], 'default': default_cert, 'other': other_cert, 'seen': seen}
    listener.close()


def test_reads_the_certificate_chosen_by_sni(tls_server):
    cert = served_certificate('127.0.0.1', tls_server['port'], 'other.test', timeout=5)
    assert cert.serial_number == tls_server['other'].serial_number
    assert tls_server['seen'] == ['other.test']


def test_without_sni_the_default_certificate(tls_server):
    cert = served_certificate('127.0.0.1', tls_server['port'], None, timeout=5)
    assert cert.serial_number == tls_server['default'].serial_number
    assert tls_server['seen'] == [None]


def test_nothing_listening_says_where_and_why():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(FleetcertError) as info:
        served_certificate('127.0.0.1', port, 'app.example.test', timeout=5)
    assert info.value.msg.startswith('no certificate could be read from 127.0.0.1:%d (SNI app.example.test): '
                                     % port)
    assert 'refused' in info.value.msg.lower()


def test_a_server_that_does_not_speak_tls_is_an_error_not_a_hang():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)

    def answer_plain_http():
        conn, dummy = listener.accept()
        conn.recv(1024)
        conn.sendall(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
        conn.close()

    thread = threading.Thread(target=answer_plain_http, daemon=True)
    thread.start()
    try:
        with pytest.raises(FleetcertError) as info:
            served_certificate('127.0.0.1', listener.getsockname()[1], None, timeout=5)
    finally:
        listener.close()
    assert 'no certificate could be read from 127.0.0.1:' in info.value.msg
