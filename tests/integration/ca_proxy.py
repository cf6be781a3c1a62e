# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A TLS reverse proxy in front of a real Pebble that answers chosen requests itself.

Pebble has no switch for rate limits or maintenance windows, so the proxy plays
that part of a public CA: a matching request gets a 429 ``rateLimited`` or a
503 problem document with a ``Retry-After`` header instead of reaching Pebble;
every other request is forwarded unchanged. Pebble builds its URLs and checks
the JWS ``url`` from the Host header, which the proxy passes through, so the
client only ever sees the proxy's address.

The proxy presents Pebble's own API certificate: the client trusts it with the
same ``ca_bundle`` (``pebble.ca_path``). Every request is logged with its time
and who answered it, so a test can measure how long the client waited.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import http.client
import http.server
import json
import os
import ssl
import threading
import time

# Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded.
_HOP_BY_HOP = {'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te'}

PROBLEMS = {
    429: ('urn:ietf:params:acme:error:rateLimited', 'too many new orders recently (test proxy)'),
    # What Pebble 2.10 answers when it cannot find the certificate named by `replaces`.
    500: ('urn:ietf:params:acme:error:serverInternal',
          'could not find an order for the given certificate: could not find order resulting '
          'in the given certificate serial number (test proxy)'),
    503: ('urn:ietf:params:acme:error:serverInternal', 'service busy, try again later (test proxy)'),
}


def jws_payload(body):
    """The decoded payload of a flattened JWS request body ('' if there is none)."""
    try:
        payload = json.loads(body or b'{}').get('payload') or ''
        return base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)).decode('utf-8')
    except (ValueError, AttributeError):
        return ''


class Rule(object):
    """Answer the first ``times`` requests ``method path-prefix`` with ``status`` (None: always).

    ``payload_contains``: only requests whose JWS payload contains this text.
    """

    def __init__(self, method, path_prefix, status, retry_after=None, times=None,
                 payload_contains=None):
        if status not in PROBLEMS:
            raise ValueError('status must be one of %s' % sorted(PROBLEMS))
        self.method = method
        self.path_prefix = path_prefix
        self.status = status
        self.retry_after = retry_after
        self.remaining = times
        self.payload_contains = payload_contains

    def take(self, method, path, body):
        if method != self.method or not path.startswith(self.path_prefix):
            return False
        if self.payload_contains is not None and self.payload_contains not in jws_payload(body):
            return False
        if self.remaining is None:
            return True
        if self.remaining > 0:
            self.remaining -= 1
            return True
        return False


BAD_NONCE = 'urn:ietf:params:acme:error:badNonce'


def problem_type(status, payload):
    """The problem document's type of an error answer, else None."""
    if status < 400:
        return None
    try:
        return json.loads(payload).get('type')
    except (ValueError, AttributeError):
        return None


class Request(object):
    def __init__(self, when, method, path, status, by_proxy, problem=None):
        self.when = when
        self.method = method
        self.path = path
        self.status = status
        self.by_proxy = by_proxy
        self.problem = problem

    def __repr__(self):
        who = ' (proxy)' if self.by_proxy else ''
        problem = ' ' + self.problem if self.problem else ''
        return '%.2f %s %s -> %d%s%s' % (self.when, self.method, self.path, self.status,
                                         problem, who)


class CaProxy(object):
    """Start with ``CaProxy(pebble, [Rule(...)]).start()``; ``stop()`` when done."""

    def __init__(self, pebble, rules):
        self.pebble = pebble
        self.rules = list(rules)
        self.requests = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    # What the issue fixture and modules need from a CA object.
    @property
    def directory_url(self):
        return 'https://localhost:%d/dir' % self.port

    @property
    def ca_path(self):
        return self.pebble.ca_path

    def add_a(self, name, ip):
        self.pebble.add_a(name, ip)

    @property
    def port(self):
        return self._server.server_address[1]

    def requests_to(self, method, path_prefix, bad_nonces=False):
        """Requests seen, in order. Pebble rejects 5 % of nonces at random and the client
        resends those at once: they are left out unless ``bad_nonces``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
                    and (bad_nonces or r.problem != BAD_NONCE)]

    def _decide(self, method, path, body):
        with self._lock:
            for rule in self.rules:
                if rule.take(method, path, body):
                    return rule
        return None

    def _record(self, method, path, status, by_proxy, problem=None):
        with self._lock:
            self.requests.append(Request(time.monotonic(), method, path, status, by_proxy, problem))

    def start(self):
        proxy = self
        upstream_tls = ssl.create_default_context(cafile=self.pebble.ca_path)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):  # quiet: the test reads proxy.requests
                pass

            def _answer(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else None
                rule = proxy._decide(self.command, self.path, body)
                if rule is not None:
                    kind, detail = PROBLEMS[rule.status]
                    payload = json.dumps({'type': kind, 'detail': detail,
                                          'status': rule.status}).encode()
                    self.send_response(rule.status)
                    self.send_header('Content-Type', 'application/problem+json')
                    if rule.retry_after is not None:
                        self.send_header('Retry-After', str(rule.retry_after))
                    self.send_header('Content-Length', str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, rule.status, True, kind)
                    return
                upstream = http.client.HTTPSConnection('localhost', proxy.pebble.port_base,
                                                       context=upstream_tls, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != 'content-length':
                        self.send_header(key, value)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(payload)
                proxy._record(self.command, self.path, response.status, False,
                              problem_type(response.status, payload))

            do_GET = do_POST = do_HEAD = _answer

        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_dir = os.path.join(self.pebble.dir, 'tls')
        tls.load_cert_chain(os.path.join(tls_dir, 'server.pem'), os.path.join(tls_dir, 'server.key'))
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name='ca-proxy', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None
