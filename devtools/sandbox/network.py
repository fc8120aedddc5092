"""The sandbox's packet filter: where this machine and the hosts may go, as on a cloud.

One nftables table ``inet dsb<token>`` per SandboxHosts (named with the owner's token, so
``sweep_stale_tables()`` removes the table of a process that died) holds:

* ``public``: a map public address -> the host address it is translated to. AWS public
  addresses (auto-assigned and Elastic IPs) are a 1:1 NAT done by the internet gateway: they
  are never on the instance's interface ("The instance is not aware of its public IP address",
  AWS VPC User Guide, "IP addressing for your VPCs and subnets"). This machine's connections to
  a public address are DNATed (output hook) to the host;
* ``runner_outside``: this machine (the StackStorm runner) is not in the VPC, so it cannot open
  a connection to a private address. Real AWS would just not route it (a timeout); the sandbox
  refuses at once (TCP reset / ICMP admin-prohibited) so that a wrong address fails fast and
  names itself. Connections that were DNATed from a public address, replies, and the
  sandbox's own sockets marked with ``INTERNAL_MARK`` (SO_MARK) pass;
* ``egress``: the set of host addresses that may reach the internet address. On AWS a host
  reaches the internet only with a public address and a route to an internet gateway, or a
  route to a NAT gateway; every other host's packets to it are refused at once;
* ``silent``: public addresses the sandbox handed out that reach no host now (the host killed,
  stopped or terminated, the address released or not yet moved). This machine's packets to
  them are dropped, so a connection times out as it does toward a cloud address with no live
  instance behind it. Without it they took the machine's default route to the real address
  on the internet (which a transparent egress proxy answered: an SSH connection with no
  banner, an HTTP 404).
"""

import ipaddress
import re
import socket
import subprocess

# SO_MARK of the sandbox's own connections to private addresses (sshd readiness checks).
INTERNAL_MARK = 0x44534201
TABLE_RE = re.compile(r"^table inet (\S+)$")


class NetworkError(RuntimeError):
    """nft or ip refused a change."""


def _nft(script):
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                            check=False, timeout=30)
    if result.returncode != 0:
        raise NetworkError("nft failed: %s\n%s" % (result.stderr.strip(), script))


def list_tables():
    """Names of this machine's inet nftables tables."""
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False, timeout=30)
    return [m.group(1) for m in map(TABLE_RE.match, result.stdout.splitlines()) if m]


def delete_table(name):
    subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, check=False,
                   timeout=30)


def internal_connection(address, port, timeout):
    """A TCP connection from this machine that the runner_outside filter lets through."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, INTERNAL_MARK)
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _refuse(match):
    """Rules refusing `match` at once: TCP with a reset, the rest with ICMP."""
    return ("%s meta l4proto tcp reject with tcp reset\n"
            "%s reject with icmpx type admin-prohibited\n" % (match, match))


class Firewall:
    """The nftables table of one SandboxHosts. See the module docstring.

    private_networks: the VPC networks this machine must not reach when runner_outside.
    internet: (address, bridges whose hosts need egress) or None.
    """

    def __init__(self, table, private_networks, runner_outside=False, internet=None):
        self.table = table
        self.private = [str(ipaddress.ip_network(n)) for n in private_networks]
        self.runner_outside = runner_outside
        self.internet = internet
        self.created = False

    def create(self):
        rules = ["table inet %s {" % self.table,
                 "  set egress { type ipv4_addr; }",
                 "  set silent { type ipv4_addr; }",
                 "  map public { type ipv4_addr : ipv4_addr; }",
                 "  chain nat_output {",
                 "    type nat hook output priority -100; policy accept;",
                 "    dnat ip to ip daddr map @public",
                 "  }",
                 "  chain output {",
                 "    type filter hook output priority 0; policy accept;",
                 # After nat_output: a translated address is a host's, not silent.
                 "    ip daddr @silent drop"]
        if self.runner_outside:
            private = "ip daddr { %s }" % ", ".join(self.private)
            rules += ["    ct state established,related accept",
                      "    meta mark %d accept" % INTERNAL_MARK,
                      "    ct status dnat accept"]
            rules += ["    " + line for line in _refuse(private).splitlines()]
        rules += ["  }",
                  "  chain input {",
                  "    type filter hook input priority 0; policy accept;"]
        if self.internet:
            address, bridges = self.internet
            for bridge in bridges:
                match = "iifname %s ip daddr %s" % (bridge, address)
                rules.append("    %s ip saddr @egress accept" % match)
                rules += ["    " + line for line in _refuse(match).splitlines()]
        rules += ["  }", "}", ""]
        _nft("\n".join(rules))
        self.created = True

    def delete(self):
        if self.created:
            delete_table(self.table)
            self.created = False

    def set_public(self, public, target):
        """Translate `public` to `target` (None: stop translating it)."""
        _nft("delete element inet %s public { %s }\n" % (self.table, public)
             if target is None else
             "add element inet %s public { %s : %s }\n" % (self.table, public, target))

    def set_silent(self, public, silent):
        """Drop (silent=True) or stop dropping this machine's packets to `public`."""
        _nft("%s element inet %s silent { %s }\n"
             % ("add" if silent else "delete", self.table, public))

    def set_egress(self, address, allowed):
        _nft("%s element inet %s egress { %s }\n"
             % ("add" if allowed else "delete", self.table, address))
