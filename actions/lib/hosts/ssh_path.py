"""How the action runner reaches a host over SSH: which address, through which jump host, as
which user.

Modes (the profile's `ssh_address`):

* ``private``: the host's private address. For a runner inside the deployment's network (or
  joined to it by VPN or peering), and the default for static servers, which the operator
  already reaches.
* ``public``: the host's public address; hosts without one are still reached privately.
* ``jump``: proxies (and mini's single host, which is also its proxy) at their public
  address; every other host at its private address, through an SSH channel opened on the
  first proxy (`ssh -J` does the same). The default on AWS and DigitalOcean: the pack creates a
  new network the runner is not part of, and only the proxies need port 22 open to
  admin_networks (see firewall_rules()).

Login user: a static host's own `ssh_user`, else the profile's `ssh_user`, else the image's
login user that the provider put in the inventory record (`login_user`: `admin` on Debian's AWS
images, `ubuntu` on Ubuntu's, `root` on DigitalOcean), else root for records from before
login_user existed.
"""

import socket
import threading
import time

from lib.errors import InputError

SSH_ADDRESSES = ("private", "public", "jump")
DEFAULT_SSH_ADDRESS = {"aws": "jump", "digitalocean": "jump", "static": "private"}
SSH_PORT = 22
JUMP_ROLE = "proxy"
# A jump proxy is given this long to show its SSH banner before the next one is tried: a dead
# proxy (stopped, its address moved) must not cost every host behind it a full login timeout.
JUMP_PROBE_TIMEOUT = 5.0
# How long a probe's answer is believed: a process logging in to many hosts probes each proxy
# once, not once per host (every probe is an unauthenticated connection, MaxStartups counts it).
JUMP_PROBE_TTL = 30.0


def resolve_via(value, provider):
    """The profile's ssh_address, or the provider's default when it sets none."""
    if value in (None, ""):
        return DEFAULT_SSH_ADDRESS.get(provider or "aws", "private")
    if value not in SSH_ADDRESSES:
        raise InputError("ssh_address", "unknown way to reach hosts: %r" % (value,),
                         list(SSH_ADDRESSES))
    return value


def _private(host):
    if not host.get("private_address"):
        raise InputError("hosts", "host %s has no private address in the inventory"
                         % host["name"])
    return host["private_address"]


def _public(host):
    return (host.get("public_addresses") or [None])[0]


def jump_hosts(hosts):
    """The proxies that can carry a jump: those with a public address, by name."""
    return sorted((h for h in hosts or [] if JUMP_ROLE in (h.get("roles") or [])
                   and _public(h)), key=lambda h: h["name"])


def route(host, via, hosts=None):
    """(address, jump host record or None): where the runner connects for `host`."""
    via = resolve_via(via, None) if via else "private"
    if via == "public":
        return _public(host) or _private(host), None
    if via == "private":
        return _private(host), None
    if JUMP_ROLE in (host.get("roles") or []) and _public(host):
        return _public(host), None
    proxies = jump_hosts(hosts)
    if not proxies:
        raise InputError("ssh_address", "jump needs a proxy host with a public address to reach "
                         "%s through, and the inventory has none; use private or public"
                         % host["name"], list(SSH_ADDRESSES))
    return _private(host), proxies[0]


def routes(host, via, hosts=None):
    """Every (address, jump host or None) `host` can be reached by, in order of preference:
    with jump, one per jump proxy by name (route() is the first)."""
    address, jump = route(host, via, hosts)
    if jump is None:
        return [(address, None)]
    return [(address, proxy) for proxy in jump_hosts(hosts)]


class JumpProbe:
    """Remembers, for JUMP_PROBE_TTL seconds, which jump proxies answered SSH."""

    def __init__(self, timeout=JUMP_PROBE_TIMEOUT, ttl=JUMP_PROBE_TTL, clock=time.monotonic,
                 opener=socket.create_connection):
        self.timeout, self.ttl, self.clock, self.opener = timeout, ttl, clock, opener
        self._seen = {}
        self._lock = threading.Lock()

    def alive(self, proxy):
        address = _public(proxy)
        with self._lock:
            seen = self._seen.get(address)
            if seen is not None and self.clock() - seen[1] < self.ttl:
                return seen[0]
        answer = self.banner(address)
        self.remember(proxy, answer)
        return answer

    def remember(self, proxy, answer):
        with self._lock:
            self._seen[_public(proxy)] = (bool(answer), self.clock())

    def banner(self, address):
        """True when sshd at address says "SSH-" within the timeout (RFC 4253 4.2)."""
        try:
            with self.opener((address, SSH_PORT), timeout=self.timeout) as sock:
                sock.settimeout(self.timeout)
                return sock.recv(4) == b"SSH-"
        except OSError:
            return False


PROBE = JumpProbe()


def ordered_routes(host, via, hosts=None, probe=None):
    """routes() with the jump proxies that answer first: a dead first proxy (the one route()
    names) then costs one short probe, not every login behind it. When none answers, the
    order stays as it was (the login then reports the first proxy's error)."""
    found = routes(host, via, hosts)
    if len(found) < 2:
        return found
    probe = probe or PROBE
    alive = [item for item in found if probe.alive(item[1])]
    return alive + [item for item in found if item not in alive]


def login_user(host, profile_user=None):
    """The user to log in as on `host` (see the module docstring)."""
    if host.get("ssh_user"):
        return host["ssh_user"]
    if profile_user:
        return profile_user
    if "login_user" not in host:
        return "root"
    if not host["login_user"]:
        raise InputError("ssh_user", "cannot tell the login user of %s's image%s; set the "
                         "profile's ssh_user (admin on Debian, ubuntu on Ubuntu)"
                         % (host["name"], " (%s)" % host["image"] if host.get("image") else ""))
    return host["login_user"]


def firewall_rules(rules, via):
    """The plan's firewall with SSH opened for the chosen path: with jump, admin_networks reach
    port 22 on the proxies only, and the proxies reach every host's port 22 inside the
    deployment (the jump's second hop starts on the proxy)."""
    if via != "jump":
        return rules
    result = []
    for rule in rules:
        if rule["role"] == "*" and rule["source"] == "admin" and \
                rule["from_port"] <= SSH_PORT <= rule["to_port"]:
            result.append(dict(rule, role=JUMP_ROLE))
            result.append(dict(rule, source="internal", cidrs=[]))
        else:
            result.append(rule)
    return result
