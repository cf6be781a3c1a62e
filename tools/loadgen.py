# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Steady HTTPS + websocket load through the fleet's load balancer.

Used by tests/fleet (zero downtime during a renewal) and bench/fleet_bench.py.
Only ever aimed at our own containers: the target is an address on this
machine (the local fleet's load balancer), given explicitly.

    python loadgen.py --address 10.89.3.2 --name app.fleet.test --cafile root.pem \
        --out load.json [--connections 4] [--interval 0.02] [--requests-per-connection 40]
        [--websockets 12] [--ws-interval 0.5] [--duration 300] [--max-requests 200000]
        [--stop-file PATH]

Load:
- ``--connections`` HTTPS clients, each sending ``GET /`` on a keep-alive
  connection every ``--interval`` seconds. After ``--requests-per-connection``
  requests a client closes its connection and opens a new one, so new TLS
  handshakes (which show the certificate nginx serves *now*) happen all the
  time, while each connection lives long enough to be open across a reload.
- ``--websockets`` RFC 6455 connections to ``/websocket`` (the stand-in
  Meteor app echoes frames), opened at the start and held to the end. Each
  sends a numbered text frame every ``--ws-interval`` seconds and a ping every
  tenth time; every echo and pong must come back in order within
  ``--timeout``. A websocket is never reopened: one that closes or stops
  echoing is a dropped websocket.

Every TLS connection is verified against ``--cafile`` (Pebble's issuing root,
never the machine's trust store) for ``--name`` (SNI and hostname check); the
serial of the certificate the peer presented is recorded per connection.

A request is a failure when it gets no complete response, a status other than
200, or any TLS/connection error; with one exception that every HTTP client
makes: when a *reused* keep-alive connection turns out to be closed by the
server before any byte of the response arrived (nginx closes idle keep-alive
connections of old workers after a reload), the idempotent GET is sent again
once on a new connection (RFC 9110 section 9.2.2, RFC 9112 section 9.3.1).
Such retries are counted (``keepalive_retries``) and reported, never hidden;
a retry that fails is a failure.

The run stops at ``--duration`` seconds, at ``--max-requests`` requests, on
SIGTERM/SIGINT, or when ``--stop-file`` exists; websockets are then closed
with a close handshake. Raw records and a summary go to ``--out`` (JSON);
``summarize()`` splits them into phases by wall-clock marks.
"""

from __future__ import absolute_import, division, print_function

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import signal
import ssl
import sys
import time

WS_GUID = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
READ_LIMIT = 1 << 20


class EarlyClose(Exception):
    """The server closed the connection before any byte of the response."""


class RequestError(Exception):
    pass


def serial_of(der):
    """Serial number (lowercase hex, no leading zeros) of a DER certificate."""
    from cryptography import x509
    return format(x509.load_der_x509_certificate(der).serial_number, 'x')


def percentile(values, fraction):
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(round(fraction * len(ordered) + 0.5)))
    return ordered[min(rank, len(ordered)) - 1]


class Config(object):
    def __init__(self, args):
        self.address = args.address
        self.port = args.port
        self.name = args.name
        self.path = args.path
        self.connections = args.connections
        self.interval = args.interval
        self.per_connection = args.requests_per_connection
        self.websockets = args.websockets
        self.ws_interval = args.ws_interval
        self.timeout = args.timeout
        self.duration = args.duration
        self.max_requests = args.max_requests
        self.stop_file = args.stop_file
        self.context = ssl.create_default_context(cafile=args.cafile)
        # HTTP/1.1 only: the test is about connections and handshakes.
        self.context.set_alpn_protocols(['http/1.1'])


class Run(object):
    def __init__(self, config):
        self.cfg = config
        self.requests = []
        self.connections = []
        self.websockets = []
        self.stopping = asyncio.Event()
        self.started = time.time()
        self.count = 0

    # -- connections ------------------------------------------------------

    async def open_tls(self, kind):
        """Open a verified TLS connection; returns (reader, writer, record)."""
        opened = time.time()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.cfg.address, self.cfg.port, ssl=self.cfg.context,
                                    server_hostname=self.cfg.name, limit=READ_LIMIT),
            self.cfg.timeout)
        sslobj = writer.get_extra_info('ssl_object')
        record = {
            'id': len(self.connections), 'kind': kind, 'opened': opened,
            'handshake': time.time() - opened,
            'serial': serial_of(sslobj.getpeercert(binary_form=True)),
            'tls': sslobj.version(),
        }
        self.connections.append(record)
        return reader, writer, record

    @staticmethod
    async def close(writer):
        if writer is None:
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except Exception:  # pylint: disable=broad-except
            pass  # the peer may already be gone; nothing to report

    # -- HTTP ---------------------------------------------------------------

    async def read_response(self, reader):
        """Read one HTTP/1.1 response; returns (status, headers, body length)."""
        try:
            line = await reader.readline()
        except (ConnectionError, ssl.SSLError) as exc:
            raise EarlyClose('%s before the status line' % type(exc).__name__)
        if not line:
            raise EarlyClose('EOF before the status line')
        parts = line.decode('latin-1').split(' ', 2)
        if len(parts) < 2 or not parts[0].startswith('HTTP/1.'):
            raise RequestError('bad status line %r' % line[:80])
        status = int(parts[1])
        headers = {}
        while True:
            line = await reader.readline()
            if not line:
                raise RequestError('EOF in the headers')
            if line in (b'\r\n', b'\n'):
                break
            key, _sep, value = line.decode('latin-1').partition(':')
            headers[key.strip().lower()] = value.strip()
        length = 0
        if headers.get('transfer-encoding', '').lower() == 'chunked':
            while True:
                size = int((await reader.readline()).split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    await reader.readline()
                    break
                length += len(await reader.readexactly(size))
                await reader.readexactly(2)
        elif 'content-length' in headers:
            length = len(await reader.readexactly(int(headers['content-length'])))
        else:
            raise RequestError('response without a length (status %d)' % status)
        return status, headers, length

    async def one_request(self, reader, writer):
        request = ('GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fleetcert-loadgen\r\n'
                   'Accept: text/html\r\n\r\n' % (self.cfg.path, self.cfg.name)).encode()
        try:
            writer.write(request)
            await writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            raise EarlyClose('%s while sending' % type(exc).__name__)
        return await asyncio.wait_for(self.read_response(reader), self.cfg.timeout)

    def budget_left(self):
        return (not self.stopping.is_set() and self.count < self.cfg.max_requests
                and time.time() - self.started < self.cfg.duration)

    async def http_client(self, index):
        reader = writer = conn = None
        used = 0
        next_at = time.monotonic() + index * self.cfg.interval / max(1, self.cfg.connections)
        while self.budget_left():
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stopping.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            next_at = max(next_at + self.cfg.interval, time.monotonic())
            self.count += 1
            rec = {'t': time.time(), 'client': index, 'retried': False}
            t0 = time.monotonic()
            try:
                if writer is None:
                    reader, writer, conn = await self.open_tls('http')
                    used = 0
                try:
                    status, headers, length = await self.one_request(reader, writer)
                except EarlyClose as exc:
                    if used == 0:
                        raise RequestError('fresh connection closed: %s' % exc)
                    rec['retried'] = True
                    rec['retry_reason'] = str(exc)
                    rec['stale_conn'] = conn['id']
                    await self.close(writer)
                    reader, writer, conn = await self.open_tls('http')
                    used = 0
                    try:
                        status, headers, length = await self.one_request(reader, writer)
                    except EarlyClose as exc2:
                        raise RequestError('retry on a fresh connection: %s' % exc2)
                used += 1
                rec.update(lat=time.monotonic() - t0, status=status, bytes=length,
                           conn=conn['id'], serial=conn['serial'], conn_opened=conn['opened'])
                if status != 200:
                    rec['error'] = 'HTTP %d' % status
                if headers.get('connection', '').lower() == 'close' or used >= self.cfg.per_connection:
                    await self.close(writer)
                    reader = writer = None
            except (RequestError, ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError, ValueError) as exc:
                rec.update(lat=time.monotonic() - t0, status=None,
                           error='%s: %s' % (type(exc).__name__, exc),
                           conn=conn['id'] if conn else None)
                await self.close(writer)
                reader = writer = conn = None
            self.requests.append(rec)
        await self.close(writer)

    # -- websockets -------------------------------------------------------

    @staticmethod
    def frame(opcode, payload):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        else:
            header += bytes([0x80 | 126]) + length.to_bytes(2, 'big')
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    @staticmethod
    async def read_frame(reader):
        head = await reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), 'big')
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), 'big')
        return head[0] & 0x0F, await reader.readexactly(length)

    async def websocket(self, index):
        ws = {'id': index, 'opened': None, 'echoes': 0, 'pongs': 0, 'rtts': [],
              'last_echo': None, 'dropped': None, 'closed_cleanly': False}
        self.websockets.append(ws)
        writer = None
        try:
            reader, writer, conn = await self.open_tls('websocket')
            ws.update(opened=conn['opened'], conn=conn['id'], serial=conn['serial'])
            key = base64.b64encode(os.urandom(16))
            writer.write(b'GET /websocket HTTP/1.1\r\nHost: ' + self.cfg.name.encode()
                         + b'\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                         b'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ' + key + b'\r\n\r\n')
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), self.cfg.timeout)
            lines = head.decode('latin-1').split('\r\n')
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            if not lines[0].startswith('HTTP/1.1 101') or \
                    ('sec-websocket-accept: ' + accept).lower() not in head.decode('latin-1').lower():
                raise RequestError('no websocket upgrade: %r' % lines[0])
            seq = 0
            while not self.stopping.is_set() and time.time() - self.started < self.cfg.duration:
                seq += 1
                ping = seq % 10 == 0
                payload = ('fleetcert ws %d #%d' % (index, seq)).encode()
                sent = time.monotonic()
                writer.write(self.frame(0x9 if ping else 0x1, payload))
                await writer.drain()
                opcode, data = await asyncio.wait_for(self.read_frame(reader), self.cfg.timeout)
                want = 0xA if ping else 0x1
                if opcode != want or data != payload:
                    raise RequestError('expected opcode %d %r, got opcode %d %r'
                                       % (want, payload, opcode, data[:60]))
                ws['rtts'].append(time.monotonic() - sent)
                ws['last_echo'] = time.time()
                ws['pongs' if ping else 'echoes'] += 1
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.cfg.ws_interval)
                except asyncio.TimeoutError:
                    pass
            writer.write(self.frame(0x8, (1000).to_bytes(2, 'big')))
            await writer.drain()
            opcode, _data = await asyncio.wait_for(self.read_frame(reader), self.cfg.timeout)
            ws['closed_cleanly'] = opcode == 0x8
        except (RequestError, ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError,
                asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            ws['dropped'] = {'t': time.time(), 'error': '%s: %s' % (type(exc).__name__, exc)}
        finally:
            await self.close(writer)

    # -- control --------------------------------------------------------------

    async def watch_stop(self):
        while not self.stopping.is_set():
            if not self.budget_left() or (self.cfg.stop_file and os.path.exists(self.cfg.stop_file)):
                self.stopping.set()
                break
            await asyncio.sleep(0.1)

    async def main(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        tasks = [asyncio.ensure_future(self.websocket(i)) for i in range(self.cfg.websockets)]
        tasks += [asyncio.ensure_future(self.http_client(i)) for i in range(self.cfg.connections)]
        tasks.append(asyncio.ensure_future(self.watch_stop()))
        await asyncio.gather(*tasks)
        self.ended = time.time()


def summarize(data, marks=None):
    """Phase statistics of a run.

    marks: {'start': t1, 'switched': t2} wall-clock times. Phases: before
    (< start), during (start..switched), after (>= switched). "After the
    switch" for certificates means connections *opened* at or after
    ``switched`` (the time the new certificate was live on every node):
    connections opened earlier legitimately keep the certificate they
    negotiated until they reconnect.
    """
    marks = marks or {}
    t1 = marks.get('start', float('inf'))
    t2 = marks.get('switched', float('inf'))

    def phase_of(t):
        return 'before' if t < t1 else ('during' if t < t2 else 'after')

    phases = collections.OrderedDict((p, []) for p in ('before', 'during', 'after'))
    for rec in data['requests']:
        phases[phase_of(rec['t'])].append(rec)
    out = {'phases': collections.OrderedDict()}
    for name, recs in phases.items():
        ok = [r for r in recs if not r.get('error')]
        lat = [r['lat'] for r in ok]
        out['phases'][name] = {
            'requests': len(recs),
            'failed': len(recs) - len(ok),
            'keepalive_retries': sum(1 for r in recs if r.get('retried')),
            'p50_ms': None if not lat else round(percentile(lat, 0.50) * 1000, 2),
            'p99_ms': None if not lat else round(percentile(lat, 0.99) * 1000, 2),
            'max_ms': None if not lat else round(max(lat) * 1000, 2),
            'serials': dict(collections.Counter(r['serial'] for r in ok)),
        }
    out['requests'] = len(data['requests'])
    out['failed'] = sum(p['failed'] for p in out['phases'].values())
    out['failures'] = [r for r in data['requests'] if r.get('error')][:20]
    out['keepalive_retries'] = sum(p['keepalive_retries'] for p in out['phases'].values())
    after_conns = [c for c in data['connections'] if c['opened'] >= t2]
    out['connections'] = len(data['connections'])
    out['connections_after_switch'] = len(after_conns)
    out['serials_after_switch'] = sorted(set(c['serial'] for c in after_conns))
    out['responses_on_connections_after_switch'] = sum(
        1 for r in data['requests'] if not r.get('error') and r.get('conn_opened', 0) >= t2)
    ws = data['websockets']
    out['websockets'] = {
        'count': len(ws),
        'opened': sum(1 for w in ws if w['opened'] is not None),
        'dropped': [dict(id=w['id'], **w['dropped']) for w in ws if w['dropped']],
        'echoes': sum(w['echoes'] for w in ws),
        'pongs': sum(w['pongs'] for w in ws),
        'echoed_after_switch': sum(1 for w in ws if (w['last_echo'] or 0) >= t2),
        'closed_cleanly': sum(1 for w in ws if w['closed_cleanly']),
        'serials': sorted(set(w.get('serial') for w in ws if w.get('serial'))),
        'rtt_p99_ms': None,
    }
    rtts = [r for w in ws for r in w['rtts']]
    if rtts:
        out['websockets']['rtt_p99_ms'] = round(percentile(rtts, 0.99) * 1000, 2)
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--address', required=True, help='address of the load balancer (ours)')
    parser.add_argument('--port', type=int, default=443)
    parser.add_argument('--name', required=True, help='SNI and Host name')
    parser.add_argument('--cafile', required=True, help="Pebble's issuing root (PEM)")
    parser.add_argument('--path', default='/')
    parser.add_argument('--connections', type=int, default=4)
    parser.add_argument('--interval', type=float, default=0.02)
    parser.add_argument('--requests-per-connection', type=int, default=40)
    parser.add_argument('--websockets', type=int, default=12)
    parser.add_argument('--ws-interval', type=float, default=0.5)
    parser.add_argument('--timeout', type=float, default=10.0)
    parser.add_argument('--duration', type=float, default=300.0, help='hard limit, seconds')
    parser.add_argument('--max-requests', type=int, default=200000, help='hard limit')
    parser.add_argument('--stop-file')
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)
    for option in ('connections', 'websockets', 'requests_per_connection', 'max_requests'):
        if getattr(args, option) < (1 if option != 'websockets' else 0):
            parser.error('--%s: must be positive' % option.replace('_', '-'))
    if not 0 < args.duration <= 3600:
        parser.error('--duration: from 0 to 3600 seconds')
    if args.interval < 0.001 or args.ws_interval < 0.01:
        parser.error('--interval >= 0.001 and --ws-interval >= 0.01 seconds')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run = Run(Config(args))
    asyncio.run(run.main())
    data = {'started': run.started, 'ended': run.ended, 'requests': run.requests,
            'connections': run.connections, 'websockets': run.websockets,
            'settings': {k: v for k, v in vars(args).items() if k not in ('out',)}}
    tmp = args.out + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(data, handle)
    os.replace(tmp, args.out)
    summary = summarize(data)
    print(json.dumps({'requests': summary['requests'], 'failed': summary['failed'],
                      'keepalive_retries': summary['keepalive_retries'],
                      'websockets_dropped': len(summary['websockets']['dropped'])}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
