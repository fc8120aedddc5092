"""A stand-in for coturn's TURN control plane on the sandbox hosts: it reads the pack's rendered
turnserver.conf and answers Binding, Allocate and CreatePermission over UDP as coturn does,
including its peer filter. It relays no media (no relay sockets are opened).

This is NOT coturn (Debian's coturn package is not installable where the sandbox runs). It is
at least as strict where the pack's safety depends on it:

* configuration: every line must be an option this stand-in knows (coturn only warns about an
  unknown one); denied-peer-ip / allowed-peer-ip take "IP" or "IP-IP" of one family, as
  coturn's add_ip_list_range() parses them (no CIDR: coturn logs "Wrong address format" and
  ignores the line; here the container fails to start);
* long-term credentials (RFC 5389 section 10.2, coturn's lt-cred-mech): a request without
  MESSAGE-INTEGRITY gets 401 with REALM and NONCE; a wrong key or user gets 401 again;
* the peer check of CreatePermission, coturn's good_peer_addr() (src/server/ns_turn_server.c):
  multicast refused with no-multicast-peers, loopback refused unless allow-loopback-peers,
  the unspecified address refused (CVE-2020-26262), then allowed-peer-ip ranges accept, then
  denied-peer-ip ranges refuse, else accepted. A refused peer gets "403 Forbidden IP" (coturn's
  handle_turn_create_permission()); a CreatePermission without an allocation on the same
  5-tuple gets "437 Allocation Mismatch" (RFC 5766 section 9).
"""

import ipaddress
import os
import struct

try:
    from . import stun
except ImportError:     # beside fake_docker.py on a sandbox host
    import stun  # pylint: disable=import-error

SOFTWARE_NAME = b"sandbox coturn stand-in (denied-peer-ip as coturn 4.6)"
FLAGS = {"lt-cred-mech", "fingerprint", "no-tls", "no-dtls", "no-cli", "no-multicast-peers",
         "allow-loopback-peers", "verbose"}
VALUED = {"listening-port", "min-port", "max-port", "external-ip", "relay-ip", "realm", "user",
          "denied-peer-ip", "allowed-peer-ip", "proc-user", "proc-group", "log-file",
          "listening-ip"}


class ConfigError(Exception):
    """turnserver.conf has a line the stand-in does not accept."""


def _range(text, where):
    first, dash, last = text.partition("-")
    try:
        low = ipaddress.ip_address(first.strip())
        high = ipaddress.ip_address(last.strip()) if dash else low
    except ValueError:
        raise ConfigError("%s: wrong address range format %r (coturn takes IP or IP-IP)"
                          % (where, text)) from None
    if low.version != high.version or low > high:
        raise ConfigError("%s: wrong address range %r" % (where, text))
    return low, high


def parse_config(text):
    """The settings of a turnserver.conf; ConfigError naming the line on anything unknown."""
    conf = {"flags": set(), "users": {}, "denied": [], "allowed": [], "realm": None}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        where = "line %d (%s)" % (number, key)
        if not eq:
            if key not in FLAGS:
                raise ConfigError("%s: unknown option" % where)
            conf["flags"].add(key)
        elif key not in VALUED:
            raise ConfigError("%s: unknown option" % where)
        elif key == "user":
            name, colon, password = value.partition(":")
            if not colon or not name:
                raise ConfigError("%s: user=NAME:PASSWORD" % where)
            conf["users"][name] = password
        elif key in ("denied-peer-ip", "allowed-peer-ip"):
            conf["denied" if key[0] == "d" else "allowed"].append(_range(value, where))
        else:
            conf[key] = value
    return conf


def peer_refused(conf, address):
    """coturn's good_peer_addr(), negated: whether a CreatePermission toward address fails."""
    ip = ipaddress.ip_address(address)
    if "no-multicast-peers" in conf["flags"] and ip.is_multicast:
        return True
    if "allow-loopback-peers" not in conf["flags"] and ip.is_loopback:
        return True
    if ip.is_unspecified:
        return True

    def inside(ranges):
        return any(low.version == ip.version and low <= ip <= high for low, high in ranges)

    if inside(conf["allowed"]):
        return False
    return inside(conf["denied"])


class TurnServer:
    """Answers one UDP socket's datagrams: handle(data, (address, port)) -> reply or None."""

    def __init__(self, conf, relay_address):
        if "lt-cred-mech" not in conf["flags"] or not conf["users"] or not conf["realm"]:
            raise ConfigError("lt-cred-mech needs realm= and user=")
        self.conf, self.relay_address = conf, relay_address
        self.nonces, self.allocations = set(), {}
        self.next_port = int(conf.get("min-port") or 49152)

    def _reply(self, msg_type, txid, attrs, key=None):
        attrs = attrs + [(stun.SOFTWARE, SOFTWARE_NAME)]
        return stun.encode(msg_type, txid, attrs, key)

    def _error(self, method, txid, code, reason, key=None, challenge=False):
        attrs = [(stun.ERROR_CODE, stun.error_value(code, reason))]
        if challenge:
            nonce = os.urandom(8).hex()
            self.nonces.add(nonce)
            attrs += [(stun.REALM, self.conf["realm"].encode()), (stun.NONCE, nonce.encode())]
        return self._reply(method | stun.ERROR, txid, attrs, key)

    def _authenticate(self, data, attrs):
        """The long-term key of an authenticated request, or None."""
        user = (stun.first(attrs, stun.USERNAME) or b"").decode("utf-8", "replace")
        realm = (stun.first(attrs, stun.REALM) or b"").decode("utf-8", "replace")
        nonce = (stun.first(attrs, stun.NONCE) or b"").decode("utf-8", "replace")
        if user not in self.conf["users"] or realm != self.conf["realm"] or \
                nonce not in self.nonces:
            return None
        key = stun.long_term_key(user, realm, self.conf["users"][user])
        return key if stun.integrity_ok(data, attrs, key) else None

    def handle(self, data, addr):
        try:
            msg_type, txid, attrs = stun.decode(data)
        except stun.StunError:
            return None
        method = msg_type & 0x3EEF
        if msg_type & 0x0110:       # responses and indications: nothing to answer
            return None
        mapped = stun.xor_address(addr[0], addr[1], txid)
        if method == stun.BINDING:
            return self._reply(stun.BINDING | stun.SUCCESS, txid,
                               [(stun.XOR_MAPPED_ADDRESS, mapped)])
        if method not in (stun.ALLOCATE, stun.CREATE_PERMISSION, stun.REFRESH):
            return self._error(method, txid, 400, "Bad Request")
        if stun.first(attrs, stun.MESSAGE_INTEGRITY) is None:
            return self._error(method, txid, 401, "Unauthorized", challenge=True)
        key = self._authenticate(data, attrs)
        if key is None:
            return self._error(method, txid, 401, "Unauthorized", challenge=True)
        five_tuple = (addr[0], addr[1])
        if method == stun.ALLOCATE:
            transport = stun.first(attrs, stun.REQUESTED_TRANSPORT)
            if transport is None or transport[0] != stun.UDP:
                return self._error(method, txid, 442, "Unsupported Transport Protocol", key)
            if five_tuple in self.allocations:
                return self._error(method, txid, 437, "Allocation Mismatch", key)
            port = self.next_port
            self.next_port = port + 1 if port < int(self.conf.get("max-port") or 65535) \
                else int(self.conf.get("min-port") or 49152)
            self.allocations[five_tuple] = set()
            return self._reply(stun.ALLOCATE | stun.SUCCESS, txid, [
                (stun.XOR_RELAYED_ADDRESS, stun.xor_address(self.relay_address, port, txid)),
                (stun.LIFETIME, struct.pack("!I", 600)),
                (stun.XOR_MAPPED_ADDRESS, mapped)], key)
        if five_tuple not in self.allocations:
            return self._error(method, txid, 437, "Allocation Mismatch", key)
        if method == stun.REFRESH:
            return self._reply(stun.REFRESH | stun.SUCCESS, txid,
                               [(stun.LIFETIME, struct.pack("!I", 600))], key)
        peers = [stun.parse_xor_address(v, txid)[0] for k, v, _ in attrs
                 if k == stun.XOR_PEER_ADDRESS]
        if not peers:
            return self._error(method, txid, 400, "Bad Request", key)
        relay_family = ipaddress.ip_address(self.relay_address).version
        if any(ipaddress.ip_address(p).version != relay_family for p in peers):
            return self._error(method, txid, 443, "Peer Address Family Mismatch", key)
        if any(peer_refused(self.conf, p) for p in peers):
            return self._error(method, txid, 403, "Forbidden IP", key)
        self.allocations[five_tuple].update(peers)
        return self._reply(stun.CREATE_PERMISSION | stun.SUCCESS, txid, [], key)


def relay_address(conf, fallback):
    """The address coturn hands out in XOR-RELAYED-ADDRESS: external-ip's public part (the
    form PUBLIC/PRIVATE maps a NAT-ed address), else relay-ip, else the host's."""
    external = conf.get("external-ip")
    if external:
        return external.split("/")[0]
    return conf.get("relay-ip") or fallback
