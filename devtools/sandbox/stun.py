"""STUN messages (RFC 5389) with TURN's attributes (RFC 5766), and a small TURN client.

The client does what a caller's WebRTC stack does with the ice-servers Dialog hands out:
Allocate over UDP with long-term credentials (a first request answered 401 with REALM and NONCE,
then the same request with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY), then CreatePermission
toward a peer. The sandbox uses it against the voice hosts; it sends no media.

    client = TurnClient("198.18.0.5", 3478, "user", "password")
    client.allocate()                       # the relayed (address, port)
    client.create_permission("10.0.0.7")    # (0, "") or (403, "Forbidden IP")
"""

import binascii
import hashlib
import hmac
import ipaddress
import os
import socket
import struct

MAGIC = 0x2112A442
BINDING, ALLOCATE, REFRESH, CREATE_PERMISSION = 0x0001, 0x0003, 0x0004, 0x0008
SUCCESS, ERROR = 0x0100, 0x0110
MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0001, 0x0006, 0x0008, 0x0009
UNKNOWN_ATTRIBUTES, LIFETIME, XOR_PEER_ADDRESS, REALM, NONCE = 0x000A, 0x000D, 0x0012, 0x0014, \
    0x0015
XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT, XOR_MAPPED_ADDRESS = 0x0016, 0x0019, 0x0020
SOFTWARE, FINGERPRINT = 0x8022, 0x8028
UDP = 17


class StunError(Exception):
    """A datagram that is not a well-formed STUN message."""


def _pad(value):
    return value + b"\0" * (-len(value) % 4)


def long_term_key(username, realm, password):
    """RFC 5389 section 15.4: MD5(username ":" realm ":" password)."""
    return hashlib.md5(("%s:%s:%s" % (username, realm, password)).encode("utf-8")).digest()


def encode(msg_type, txid, attrs, key=None, fingerprint=True):
    """A STUN message: attrs [(type, bytes)], then MESSAGE-INTEGRITY (with key) and
    FINGERPRINT, each computed over the message with its length field covering them."""
    body = b"".join(struct.pack("!HH", t, len(v)) + _pad(v) for t, v in attrs)
    if key is not None:
        head = struct.pack("!HHI", msg_type, len(body) + 24, MAGIC) + txid
        digest = hmac.new(key, head + body, hashlib.sha1).digest()
        body += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + digest
    if fingerprint:
        head = struct.pack("!HHI", msg_type, len(body) + 8, MAGIC) + txid
        crc = (binascii.crc32(head + body) & 0xFFFFFFFF) ^ 0x5354554E
        body += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return struct.pack("!HHI", msg_type, len(body), MAGIC) + txid + body


def decode(data):
    """(type, txid, [(attr type, value, offset of the attribute)]); StunError when malformed."""
    if len(data) < 20:
        raise StunError("shorter than a STUN header")
    msg_type, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != MAGIC or msg_type & 0xC000 or length % 4 or len(data) != 20 + length:
        raise StunError("not a STUN message")
    attrs, offset = [], 20
    while offset < len(data):
        if offset + 4 > len(data):
            raise StunError("truncated attribute")
        kind, size = struct.unpack("!HH", data[offset:offset + 4])
        if offset + 4 + size > len(data):
            raise StunError("attribute runs past the message")
        attrs.append((kind, data[offset + 4:offset + 4 + size], offset))
        offset += 4 + size + (-size % 4)
    return msg_type, data[8:20], attrs


def integrity_ok(data, attrs, key):
    """RFC 5389 section 15.4: the HMAC over the message up to MESSAGE-INTEGRITY, the header's
    length counting up to and including that attribute."""
    for kind, value, offset in attrs:
        if kind == MESSAGE_INTEGRITY:
            head = data[:2] + struct.pack("!H", offset + 24 - 20) + data[4:20]
            expected = hmac.new(key, head + data[20:offset], hashlib.sha1).digest()
            return hmac.compare_digest(expected, value)
    return False


def first(attrs, kind):
    return next((value for k, value, _ in attrs if k == kind), None)


def xor_address(address, port, txid):
    """An XOR-*-ADDRESS value (RFC 5389 section 15.2)."""
    ip = ipaddress.ip_address(address)
    mask = struct.pack("!I", MAGIC) + (txid if ip.version == 6 else b"")
    packed = bytes(a ^ b for a, b in zip(ip.packed, mask))
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port ^ (MAGIC >> 16)) + packed


def parse_xor_address(value, txid):
    family, xport = struct.unpack("!xBH", value[:4])
    size = 4 if family == 1 else 16
    mask = struct.pack("!I", MAGIC) + (txid if family == 2 else b"")
    raw = bytes(a ^ b for a, b in zip(value[4:4 + size], mask))
    if len(raw) != size or family not in (1, 2):
        raise StunError("bad XOR address")
    return str(ipaddress.ip_address(raw)), xport ^ (MAGIC >> 16)


def error_code(value):
    """(code, reason) of an ERROR-CODE attribute."""
    klass, number = value[2] & 0x7, value[3]
    return klass * 100 + number, value[4:].decode("utf-8", "replace")


def error_value(code, reason):
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


class TurnClient:
    """One TURN allocation over UDP (RFC 5766), long-term credentials."""

    def __init__(self, server, port, username, password, timeout=3.0):
        self.server = (server, int(port))
        self.username, self.password = username, password
        self.realm = self.nonce = self.key = None
        self.sock = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _exchange(self, msg_type, build, signed):
        txid = os.urandom(12)
        attrs = build(txid)
        if signed:
            attrs = attrs + [(USERNAME, self.username.encode()), (REALM, self.realm.encode()),
                             (NONCE, self.nonce.encode())]
        data = encode(msg_type, txid, attrs, self.key if signed else None)
        for _ in range(3):     # UDP: retransmit as RFC 5389 section 7.2.1 asks
            self.sock.sendto(data, self.server)
            try:
                while True:
                    answer, _ = self.sock.recvfrom(65536)
                    kind, rtxid, rattrs = decode(answer)
                    if rtxid == txid:
                        return kind, rattrs, answer, txid
            except socket.timeout:
                continue
        raise TimeoutError("no answer from %s:%d" % self.server)

    def _request(self, method, build):
        """(code, reason, attrs, txid): code 0 on success; authenticates once on 401/438.
        build(txid) gives the request's attributes (XOR addresses depend on the txid)."""
        for _ in range(2):
            kind, rattrs, answer, txid = self._exchange(method, build, self.key is not None)
            if kind == method | SUCCESS:
                if self.key is not None and not integrity_ok(answer, rattrs, self.key):
                    raise StunError("the answer's MESSAGE-INTEGRITY does not match")
                return 0, "", rattrs, txid
            code, reason = error_code(first(rattrs, ERROR_CODE) or b"\0\0\0\0")
            if code in (401, 438) and first(rattrs, NONCE):
                self.realm = (first(rattrs, REALM) or self.realm.encode()).decode()
                self.nonce = first(rattrs, NONCE).decode()
                self.key = long_term_key(self.username, self.realm, self.password)
                continue
            return code, reason, rattrs, txid
        return code, reason, rattrs, txid

    def allocate(self):
        """The relayed (address, port); StunError naming the server's error otherwise."""
        code, reason, attrs, txid = self._request(
            ALLOCATE, lambda _: [(REQUESTED_TRANSPORT, struct.pack("!B3x", UDP))])
        if code:
            raise StunError("Allocate refused: %d %s" % (code, reason))
        return parse_xor_address(first(attrs, XOR_RELAYED_ADDRESS), txid)

    def create_permission(self, peer):
        """(0, "") when the server installs a permission toward `peer`, else (code, reason)."""
        code, reason, _, _ = self._request(
            CREATE_PERMISSION, lambda txid: [(XOR_PEER_ADDRESS, xor_address(peer, 0, txid))])
        return code, reason
