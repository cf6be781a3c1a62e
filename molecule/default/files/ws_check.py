"""Websocket round trip through nginx, from outside the host.

Connects to ADDRESS:443 with SNI NAME, verifies the certificate against
CAFILE (no -k), sends an RFC 6455 upgrade for /websocket, checks the 101 and
its Sec-WebSocket-Accept, then sends a masked text frame and expects the same
text echoed back by the stand-in app. Prints one JSON line; exit 1 on failure.

usage: python3 ws_check.py ADDRESS NAME CAFILE
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_until(sock, marker, limit=65536):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > limit:
            raise RuntimeError("connection closed before %r: %r" % (marker, data[:200]))
        data += chunk
    return data


def read_frame(sock, buf):
    while len(buf) < 2:
        buf += sock.recv(4096)
    length = buf[1] & 0x7F
    offset = 2
    if length == 126:
        while len(buf) < 4:
            buf += sock.recv(4096)
        length = int.from_bytes(buf[2:4], "big")
        offset = 4
    while len(buf) < offset + length:
        buf += sock.recv(4096)
    return buf[0], buf[offset:offset + length]


def main(address, name, cafile):
    context = ssl.create_default_context(cafile=cafile)
    key = base64.b64encode(os.urandom(16))
    expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    result = {"ok": False}
    with socket.create_connection((address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as sock:
            result["tls_version"] = sock.version()
            sock.sendall(
                b"GET /websocket HTTP/1.1\r\nHost: " + name.encode() + b"\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
            data = read_until(sock, b"\r\n\r\n")
            head, dummy, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                key, dummy, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            result["status_line"] = lines[0]
            result["accept"] = headers.get("sec-websocket-accept")
            result["accept_ok"] = result["accept"] == expected_accept
            if not lines[0].startswith("HTTP/1.1 101"):
                return result
            payload = b"fleetcert websocket echo"
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            first, echoed = read_frame(sock, rest)
            result["echo_opcode"] = first & 0x0F
            result["echo"] = echoed.decode("utf-8", "replace")
            result["ok"] = result["accept_ok"] and echoed == payload and first == 0x81
            sock.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8")))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        outcome = main(*sys.argv[1:])
    except (OSError, RuntimeError, ssl.SSLError) as exc:
        outcome = {"ok": False, "error": str(exc)}
    print(json.dumps(outcome))
    sys.exit(0 if outcome["ok"] else 1)
