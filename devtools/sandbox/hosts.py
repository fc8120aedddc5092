"""Sandbox hosts: Linux network namespaces that look like small VMs reachable over SSH.

    with SandboxHosts(workdir) as hosts:                # bridge 10.80.255.254/16
        hosts.boot("dialog-server-1", "10.80.0.12")     # returns at once; boots in a thread
        hosts.wait_ready("dialog-server-1")
        # ssh -i workdir/id_ed25519 root@10.80.0.12  (or fabric/paramiko with ssh_key_path)

Layout on this machine (the action runner):

* one Linux bridge ``dsb<token>br`` in the root namespace holding ``gateway`` (by default the
  last usable address of ``cidr``), so this machine reaches every host directly;
* per host a network namespace ``dsb<token>-<name>`` with ``eth0`` (a veth whose peer
  ``dsb<token><index>`` sits in the bridge), the host's address with the cidr's prefix length,
  loopback up and a default route via the gateway. This machine does not forward the hosts'
  traffic anywhere: a policy-routing rule sends anything arriving from the bridge for another
  network to an ``unreachable`` route, so hosts reach only each other and this machine;
* per host, in new mount, UTS and PID namespaces, ``sshd`` runs as the host's PID 1 (so it
  reaps orphans, and killing it ends every process of the host). The hostname is the host's
  name, ``/etc/hosts`` is per host, and these paths are bind mounts of directories under
  ``host_root(name)`` (``workdir/<name>/``): ``/etc/dialog``, ``/opt/dialog``,
  ``/var/lib/dialog``, ``/var/log/dialog`` and ``/usr/local/bin``. The last holds the host's
  ``docker`` (devtools/sandbox/fake_docker.py) and hides this machine's ``/usr/local/bin`` from
  the host; SSH sessions get ``PATH=/usr/local/bin:...`` first (sshd ``SetEnv``). The rest of
  the filesystem is this machine's, shared by all hosts (python3, ip, coreutils ...);
* SSH: user ``root`` (or ``login_user``), public key only, with the ed25519 key pair generated in
  ``workdir/id_ed25519`` (``ssh_key_path``); each host has its own ed25519 host key, listed in
  ``workdir/known_hosts`` (``known_hosts_path``) while it runs. sshd's config, host key, pid
  file, log and boot script are in ``workdir/<name>/.sandbox/``.

The bind-mount targets (/etc/dialog, /opt/dialog, /var/lib/dialog, /var/log/dialog) must exist
on this machine: the first boot creates them empty when missing, and ``close()`` removes the
ones it created when they are still empty and no other sandbox is running.

``<token>`` is the owner's PID and a sequence number, so namespaces, links and rules left by a
process that died (SIGKILL, power loss) are recognised and removed by ``sweep_stale()``, which
every new SandboxHosts runs first.

Each host also has its own ``/root``, ``/home`` and ``/tmp`` (``<root>/root`` ...; what it
must still see of this machine there, this workdir and the fake docker's interpreter, is bound
at the same path inside them).

Cloud strictness (SandboxHosts options, off by default; see the class docstring):

* ``login_user`` ("admin", "ubuntu"): the host gets its own /etc/passwd, group, shadow,
  gshadow, sudoers and sudoers.d (devtools/sandbox/accounts.py), sshd lets in only that user,
  key in ~/.ssh/authorized_keys, with passwordless sudo, as on the cloud images;
* public addresses: ``set_public_address`` (AWS, a 1:1 NAT on this machine, see network.py);
  ``boot(public_on_interface=True)`` (DigitalOcean) puts the public address on eth0 in a second
  bridge ``dsb<token>pb`` (this machine holds the last usable address of ``public_cidr``) and
  the VPC address on eth1;
* ``runner_outside``: this machine's connections to VPC addresses are refused (nftables table
  ``inet dsb<token>``), except the sandbox's own (network.INTERNAL_MARK);
* ``internet``: ``internet_address`` on a link ``dsb<token>in``; hosts reach it only after
  ``set_egress(name, True)``, others are refused at once. DigitalOcean hosts reach it through
  their public interface. The address is the first of INTERNET_CANDIDATES (documentation and
  shared address space, outside every VPC) that this machine does not use itself: not what its
  resolver gives for its package indexes, not on its networks, not already configured here
  (``choose_internet_address``). A fixed one would, on a machine whose egress proxy has that
  address, cut the machine's own pip and apt off for as long as a sandbox runs.

Needs root, iproute2 (``ip netns``), util-linux (``unshare``, ``mount``), nftables, sudo and
openssh-server (``/usr/sbin/sshd``; Debian: ``apt-get install -y openssh-server sudo
nftables``).
"""

import contextlib
import dataclasses
import errno
import glob
import ipaddress
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import accounts, apt_standin, fake_docker, network

LOG = logging.getLogger(__name__)

PREFIX = "dsb"
SSHD = "/usr/sbin/sshd"
MOUNT_POINTS = ("/etc/dialog", "/opt/dialog", "/var/lib/dialog", "/var/log/dialog")
BIN_MOUNT = "/usr/local/bin"
SSH_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
RULE_PREF = 5210
# Per-host directories hiding this machine's: each host has its own homes and /tmp.
PRIVATE_DIRS = (("/root", 0o700), ("/home", 0o755), ("/tmp", 0o1777))
BY_ID = "/dev/disk/by-id"
# Where the sandbox's "internet" services listen: the first of these that this machine does not
# use itself (choose_internet_address). Never a fixed address: a machine behind an egress proxy
# may resolve its package indexes to one of these (it happened: every name gave the first),
# and while a sandbox holds that address locally, with a firewall refusing all but the hosts
# with egress, pip and apt on the machine get "Connection refused".
# The documentation networks (RFC 5737: TEST-NET-3, -2, -1) first: no real service is there,
# and they are outside every VPC the sandbox emulates. Then two of RFC 6598's shared address
# space (carrier-grade NAT, 100.64.0.0/10; also what overlay VPNs number from, hence the
# unusual ends of it), not routed on the internet either. Not 198.18.0.0/15 (RFC 2544): the
# sandbox's DigitalOcean public network (PUBLIC_CIDR) lives there.
INTERNET_CANDIDATES = ("203.0.113.80", "198.51.100.80", "192.0.2.80", "100.127.255.80",
                       "100.95.255.80")
# How long the resolver may take, for all names together (no DNS, or a slow one, must not hold
# up a sandbox; names without an answer by then are taken as resolving to nothing).
RESOLVE_TIMEOUT = 3.0
# Where this machine's package tools find their indexes and proxies (read, never changed).
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.pip/pip.conf",
                    "~/.config/pip/pip.conf")
PIP_URL_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_PROXY")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                   "ALL_PROXY")
APT_FILES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list",
             "/etc/apt/sources.list.d/*.sources", "/etc/apt/apt.conf", "/etc/apt/apt.conf.d/*")
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"';\]]+", re.IGNORECASE)
PUBLIC_CIDR = "198.18.0.0/16"
SSHD_START_TIMEOUT = 15.0
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED_NAMES = ("id_ed25519", "id_ed25519.pub", "authorized_keys", "known_hosts")  # in workdir
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(r"^%s([0-9a-f]{6})([0-9a-f]{2})" % PREFIX)
_SEQUENCE = itertools.count()

# Host states, in order.
PENDING, BOOTING, RUNNING, FAILED, TERMINATED = (
    "pending", "booting", "running", "failed", "terminated")


class SandboxError(RuntimeError):
    """The sandbox cannot do what was asked (bad input, missing tool, boot failure)."""


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """A snapshot of one host. state: pending, booting, running, failed or terminated."""
    name: str
    address: str
    state: str
    namespace: str
    root: str
    error: str = None
    public_address: str = None
    login_user: str = None


def preflight():
    """What keeps sandbox hosts from working on this machine: a list of messages (empty = ok)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("sandbox hosts need root (network namespaces, a bridge, bind mounts); "
                        "run as root")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("mount", "mount"),
                          ("nft", "nftables"), ("sudo", "sudo")):
        if shutil.which(tool) is None:
            problems.append("%s is missing: apt-get install -y %s" % (tool, package))
    if not os.access(SSHD, os.X_OK):
        problems.append("%s is missing: apt-get update && apt-get install -y openssh-server"
                        % SSHD)
    if shutil.which("ip") is not None and os.geteuid() == 0:
        result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            problems.append("`ip netns` does not work here: %s" % result.stderr.strip())
    return problems


def _run(*argv, check=True, timeout=30):
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise SandboxError("%s failed (%d): %s" % (" ".join(argv), result.returncode,
                                                   result.stderr.strip()))
    return result


def _owner_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name):
    match = _TOKEN_RE.match(name)
    return bool(match) and not _owner_alive(int(match.group(1), 16))


def _list_netns():
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(namespace):
    result = _run("ip", "netns", "pids", namespace, check=False)
    return {int(p) for p in result.stdout.split() if p.isdigit()}


def _kill_netns(namespace, spare=()):
    """SIGKILL every process in the namespace but `spare` until none is left."""
    deadline = time.monotonic() + 10
    while True:
        pids = _netns_pids(namespace) - set(spare)
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _bridge_nf_iptables():
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables", encoding="ascii") as handle:
            enabled = handle.read().strip() == "1"
    except OSError:
        enabled = False
    return enabled and shutil.which("iptables") is not None


def sweep_stale():
    """Remove namespaces, links, rules and firewall rules left by sandboxes whose process died."""
    for namespace in _list_netns():
        if _stale(namespace):
            LOG.warning("removing stale sandbox namespace %s", namespace)
            _kill_netns(namespace)
            _run("ip", "netns", "del", namespace, check=False)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            link = parts[1].strip().split("@")[0]
            if _stale(link):
                _run("ip", "link", "del", link, check=False)
    for line in _run("ip", "rule", "list", check=False).stdout.splitlines():
        match = re.match(r"^(\d+):.*\biif (\S+) (?:\[detached\] )?lookup (\d+)", line)
        if match and _stale(match.group(2)):
            _run("ip", "rule", "del", "pref", match.group(1), "iif", match.group(2), "table",
                 match.group(3), check=False)
            _run("ip", "route", "flush", "table", match.group(3), check=False)
    if _bridge_nf_iptables():
        rules = _run("iptables", "-w", "-S", "FORWARD", check=False).stdout.splitlines()
        for rule in rules:
            match = re.match(r"^-A FORWARD -i (\S+) -o (\S+) -j ACCEPT$", rule)
            if match and match.group(1) == match.group(2) and _stale(match.group(1)):
                _run("iptables", "-w", "-D", "FORWARD", "-i", match.group(1), "-o",
                     match.group(1), "-j", "ACCEPT", check=False)
    if shutil.which("nft") is not None:  # absent before the first sandbox with a firewall
        for table in network.list_tables():
            if _stale(table):
                network.delete_table(table)


def package_index_names(environ=None):
    """Host names this machine's package tools reach: pip's default index (as pip itself names
    it), the indexes, links and proxies of pip's configuration files and environment, the
    proxies of the environment, and apt's sources and proxies. Unreadable files are skipped."""
    environ = os.environ if environ is None else environ
    names = set()
    try:
        from pip._internal.models.index import PyPI  # pylint: disable=import-outside-toplevel
        names.update((PyPI.netloc, PyPI.file_storage_domain))
    except Exception:  # pylint: disable=broad-except
        pass  # no pip here: its configuration below still counts
    texts = [environ.get(name, "") for name in PIP_URL_VARIABLES]
    for name in PROXY_VARIABLES:
        value = environ.get(name, "").strip()
        texts.append(value if "://" in value or not value else "http://" + value)
    patterns = list(PIP_CONFIG_FILES) + [os.path.join(sys.prefix, "pip.conf")] + \
        [environ.get("PIP_CONFIG_FILE") or ""] + list(APT_FILES)
    for pattern in filter(None, patterns):
        for path in sorted(glob.glob(os.path.expanduser(pattern))):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    texts.extend(line for line in handle
                                 if not line.lstrip().startswith(("#", "//", ";")))
            except OSError:
                continue
    for text in texts:
        for url in _URL_RE.findall(text):
            try:
                host = urllib.parse.urlsplit(url).hostname
            except ValueError:
                continue
            if host:
                names.add(host)
    return sorted(names)


def resolve_addresses(names, timeout=RESOLVE_TIMEOUT, getaddrinfo=socket.getaddrinfo):
    """{name: IPv4 addresses this machine's resolver gives for it}, all names looked up at once
    and waited for `timeout` seconds in all. A name that fails (no DNS) or has not answered by
    then is left out."""
    results = {}

    def lookup(name):
        try:
            infos = getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        results[name] = {info[4][0] for info in infos}

    threads = [threading.Thread(target=lookup, args=(name,), daemon=True,
                                name="sandbox-resolve-%s" % name) for name in names]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = [name for name, thread in zip(names, threads) if thread.is_alive()]
    if late:
        LOG.warning("the resolver did not answer for %s within %.0f s; choosing the sandbox's "
                    "internet address without them", ", ".join(late), timeout)
    return {name: set(results[name]) for name in names if name in results}


def resolver_nameservers(path="/etc/resolv.conf"):
    """The DNS servers this machine asks (resolv.conf), IPv4 ones as strings."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [words[1] for words in (line.split() for line in lines)
            if len(words) > 1 and words[0] == "nameserver" and "." in words[1]]


def machine_networks():
    """(network, kind, line) for each IPv4 address of this machine (kind "address": the network
    it is on, the address itself for a /32) and each route other than a default one ("route")."""
    found = []
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            found.append((ipaddress.ip_interface(match.group(1)).network, "address",
                          line.strip()))
    for line in _run("ip", "-4", "route", "show").stdout.splitlines():
        words = line.split()
        if words and words[0] in ("unicast", "unreachable", "blackhole", "prohibit"):
            words = words[1:]
        try:
            routed = ipaddress.ip_network(words[0], strict=False)
        except (ValueError, IndexError):
            continue  # "default via ..."
        found.append((routed, "route", line.strip()))
    return found


def choose_internet_address(avoid=(), names=None, resolve=resolve_addresses,
                            networks=machine_networks, nameservers=resolver_nameservers):
    """The first of INTERNET_CANDIDATES that this machine does not use itself: not what its
    resolver gives for the names its package tools need (`names`, default
    package_index_names()) nor its DNS server; not on a network it is connected to or routes
    (`networks()`, which also covers an address already configured here, e.g. another
    sandbox's); not in `avoid` (the sandbox's own networks). SandboxError when none is left,
    saying why each was skipped. resolve(names) -> {name: addresses}; the arguments are for
    tests."""
    names = package_index_names() if names is None else list(names)
    used = {}
    for name, addresses in sorted(resolve(names).items()):
        for address in addresses:
            used.setdefault(address, "this machine's resolver gives it for %s" % name)
    for address in nameservers():
        used.setdefault(address, "this machine's DNS server")
    taken = [(net, "on this machine's network %s (%s)" % (net, line))
             for net, _kind, line in networks()]
    taken += [(ipaddress.ip_network(net), "in the sandbox's own network %s" % net)
              for net in avoid]
    skipped = []
    for candidate in INTERNET_CANDIDATES:
        ip = ipaddress.ip_address(candidate)
        why = used.get(candidate) or next((what for net, what in taken if ip in net), None)
        if why is None:
            if skipped:
                LOG.info("the sandbox's internet is at %s; skipped %s", candidate,
                         "; ".join(skipped))
            return candidate
        skipped.append("%s (%s)" % (candidate, why))
    raise SandboxError("no address left for the sandbox's internet: " + "; ".join(skipped))


def _new_ed25519():
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def remove_tree(root, attempts=5):
    """shutil.rmtree(root), tried again while entries appear under it meanwhile: the
    hypervisor's volume sync links a new instance's volumes into its by-id directory while the
    host's boot clears the old files (ENOTEMPTY); the sync restores a removed link each poll."""
    for attempt in range(attempts):
        try:
            shutil.rmtree(root)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _write(path, data, mode=0o644):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with open(os.open(path, flags, mode), "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _volume_mounts(internal):
    """Boot lines giving the host its own /dev/disk/by-id, where
    sandbox/volumes.py links its volumes' loop devices, and its own /etc/fstab, which the
    deploy edits and which, like a root disk's, survives a stop and start (fresh=False)."""
    by_id, fstab = os.path.join(internal, "by-id"), os.path.join(internal, "fstab")
    os.makedirs(by_id, exist_ok=True)
    if not os.path.exists(fstab):
        _write(fstab, "# /etc/fstab of a sandbox host: <file system> <mount point> <type> "
                      "<options> <dump> <pass>\n")
    return ["mkdir -p /dev/disk/by-id", "mount --bind '%s' /dev/disk/by-id" % by_id,
            "mount --bind '%s' /etc/fstab" % fstab]


def _supply_docker(root, python, preinstalled):
    """The host's /usr/local/bin gets the sandbox's apt-get and
    systemctl (devtools/sandbox/apt_standin.py; the real apt-get must never run on a host, they
    share this machine's /usr), and the fake docker only when `preinstalled` (otherwise the
    deploy installs it from the sandbox mirror, see mirror.py)."""
    bin_dir = os.path.join(root, BIN_MOUNT.lstrip("/"))
    apt_standin.install_shims(bin_dir, python)
    if preinstalled:
        fake_docker.install(bin_dir, python=python)
    os.makedirs(os.path.join(root, "etc", "apt", "sources.list.d"), exist_ok=True)


def _apt_mounts(root):
    """Boot lines giving the host its own /etc/apt (sources, keyrings, the stand-in's state)."""
    return ["mount --bind '%s' /etc/apt" % os.path.join(root, "etc", "apt")]


class _Host:  # pylint: disable=too-many-instance-attributes
    def __init__(self, name, address, namespace, veth, root):
        self.name = name
        self.address = address
        self.login_user = None
        self.interface_public = None  # DigitalOcean: the public address on eth0
        self.network_up = False
        self.published = None  # the public address translated to this host now
        self.egress_applied = False
        self.namespace = namespace
        self.veth = veth
        self.root = root
        self.state = PENDING
        self.error = None
        self.process = None
        self.thread = None
        self.cancel = threading.Event()
        self.teardown_lock = threading.Lock()
        self.host_public_key = None
        self.timings = {}

    def info(self):
        return HostInfo(self.name, self.address, self.state, self.namespace, self.root,
                        self.error, self.interface_public, self.login_user)


class SandboxHosts:  # pylint: disable=too-many-instance-attributes
    """Boots and removes sandbox hosts on one bridge. See the module docstring.

    workdir: a directory this object may fill (keys, per-host directories, logs); kept after
    close() for inspection. cidr: the network all hosts live in. boot_delay: default seconds
    between boot() and sshd starting (a VM's boot time). gateway: this machine's address on the
    bridge (default: the last usable address of cidr). env: extra environment variables for
    SSH sessions (sshd SetEnv), e.g. {"FAKE_CASSANDRA_JOIN_SECONDS": "3"}; sudo keeps them
    too. python: the interpreter the fake docker runs with (default: this one; it needs PyYAML).

    Cloud strictness (each off by default, the old behaviour):
    login_user: None, root logs in; "admin" (Debian's images) or "ubuntu": only that user logs
    in (key only) and has passwordless sudo; root is refused. boot() can override it per host.
    runner_outside: this machine reaches hosts only at public addresses (set_public_address,
    or a DigitalOcean host's own); connecting to a private address is refused at once.
    internet: `internet_address` (outside every VPC, one this machine does not use itself:
    choose_internet_address) exists on this machine and a host reaches it only after
    set_egress(name, True). Without it, internet_address is the
    gateway, which every host reaches.
    public_cidr: the network of public addresses on interfaces (boot(public_on_interface=True),
    DigitalOcean), on a second bridge where this machine holds the last usable address.
    """

    def __init__(self, workdir, cidr="10.80.0.0/16", boot_delay=0.0, gateway=None, env=None,
                 python=None, login_user=None, runner_outside=False, internet=False,
                 public_cidr=PUBLIC_CIDR, docker_preinstalled=True):  # pylint: disable=R0913
        problems = preflight()
        if problems:
            raise SandboxError("cannot create sandbox hosts: " + "; ".join(problems))
        self.workdir = os.path.abspath(str(workdir))
        self.network = ipaddress.ip_network(cidr)
        if self.network.version != 4 or self.network.prefixlen > 29:
            raise SandboxError("cidr must be an IPv4 network of at least 8 addresses: %s" % cidr)
        self.gateway = str(gateway or self.network.broadcast_address - 1)
        if ipaddress.ip_address(self.gateway) not in self.network:
            raise SandboxError("gateway %s is not in %s" % (self.gateway, cidr))
        self.boot_delay = float(boot_delay)
        self.env = dict(env or {})
        for key, value in self.env.items():
            if not ENV_NAME_RE.match(key) or any(c in str(value) for c in "\"\n\\"):
                raise SandboxError("unusable SSH environment variable %r=%r" % (key, value))
        self.python = os.path.abspath(python or sys.executable)
        self.docker_preinstalled = bool(docker_preinstalled)
        self.login_user = self._check_login_user(login_user)
        self.runner_outside = bool(runner_outside)
        self.internet = bool(internet)
        self.internet_address = self.gateway  # with internet: chosen below, after sweep_stale()
        self.public_network = ipaddress.ip_network(public_cidr)
        self.public_gateway = str(self.public_network.broadcast_address - 1)
        self.token = "%06x%02x" % (os.getpid() & 0xFFFFFF, next(_SEQUENCE) % 256)
        self.bridge = "%s%sbr" % (PREFIX, self.token)
        self.public_bridge = "%s%spb" % (PREFIX, self.token)
        self.internet_link = "%s%sin" % (PREFIX, self.token)
        self._public = {}   # host name -> public address translated to it (AWS: NAT)
        self._egress = set()  # host names with a way to the internet
        self._silent = set()  # public addresses handed out that reach no host now
        self._public_bridge_made = False
        self.table = str(int(self.token, 16) % 2000000000 + 1000)
        self.ssh_key_path = os.path.join(self.workdir, "id_ed25519")
        self.authorized_keys_path = os.path.join(self.workdir, "authorized_keys")
        self.known_hosts_path = os.path.join(self.workdir, "known_hosts")
        self._hosts = {}
        self._lock = threading.Lock()
        self._next_index = 0
        self._closed = False
        self._bridge_made = self._rule_made = self._iptables_made = False
        self._preexisting_mounts = {p for p in MOUNT_POINTS if os.path.lexists(p)}
        sweep_stale()
        if self.internet:  # once the addresses of dead sandboxes are gone
            self.internet_address = choose_internet_address(
                avoid=(self.network, self.public_network))
        self.firewall = network.Firewall(
            "%s%s" % (PREFIX, self.token), [self.network], self.runner_outside,
            (self.internet_address, [self.bridge]) if self.internet else None)
        os.makedirs(self.workdir, exist_ok=True)
        private, self.ssh_public_key = _new_ed25519()
        self.ssh_public_key += " sandbox@dialog"
        _write(self.ssh_key_path, private, 0o600)
        _write(self.ssh_key_path + ".pub", self.ssh_public_key + "\n")
        _write(self.authorized_keys_path, self.ssh_public_key + "\n")
        _write(self.known_hosts_path, "")
        try:
            self._create_bridge()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------- public API

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def hosts(self):
        """name -> HostInfo (address, state, namespace, root, error) for every host booted."""
        with self._lock:
            return {name: self._info(host) for name, host in self._hosts.items()}

    @property
    def connect_kwargs(self):
        """paramiko/fabric connect_kwargs that log in with the sandbox key and nothing else."""
        return {"key_filename": self.ssh_key_path, "look_for_keys": False,
                "allow_agent": False}

    def info(self, name):
        with self._lock:
            return self._info(self._host(name))

    def host_root(self, name):
        """The per-host directory: <root>/etc/dialog on this machine is the host's /etc/dialog."""
        return os.path.join(self.workdir, name)

    def by_id_dir(self, name):
        """The directory that is /dev/disk/by-id inside host `name` (empty at a fresh boot)."""
        return os.path.join(self.host_root(name), ".sandbox", "by-id")

    def set_public_address(self, name, address):
        """Make `address` host `name`'s public address (None: it has none any more).

        AWS: a 1:1 NAT, not on the host's interface. On a host booted with
        public_on_interface, `address` is translated to that interface's address (a
        DigitalOcean reserved IP)."""
        if address is not None:
            address = str(self._check_public(address))
        with self._lock:
            host = self._host(name)
            old = self._public.get(name)
            if old == address:
                return
            for other, public in self._public.items():
                if public == address and other != name:
                    raise SandboxError("public address %s is already host %s's"
                                       % (address, other))
            if host.network_up:
                self._unpublish(host)
            if address is None:
                self._public.pop(name, None)
            else:
                self._public[name] = address
                if host.network_up:
                    self._publish(host, address)
            self._write_known_hosts()

    def set_egress(self, name, allowed):
        """Let host `name` reach internet_address (allowed=True) or not. Only with internet."""
        with self._lock:
            host = self._host(name)
            if bool(allowed) == (name in self._egress):
                return
            if allowed:
                self._egress.add(name)
            else:
                self._egress.discard(name)
            if host.network_up:
                self._apply_egress(host)

    def egress(self, name):
        """True when host `name` was given a way to the internet."""
        with self._lock:
            return name in self._egress

    def boot(self, name, address, public_address=None, public_on_interface=False,
             login_user=None, delay=None, fresh=True):  # pylint: disable=too-many-arguments
        """Create host `name` at `address` and start its sshd after `delay` seconds.

        Returns at once (HostInfo in state pending); wait_ready() waits for sshd. fresh=False
        keeps the host's files from an earlier boot (an instance stopped and started again);
        by default a host starts with empty directories, like a new instance.
        public_address: AWS, a NAT address (see set_public_address); with
        public_on_interface=True (DigitalOcean) it is on eth0, on the public bridge, and
        `address` (the VPC address) on eth1. login_user: overrides the sandbox's for this host
        ("root": root logs in).
        """
        login_user = self._check_login_user(self.login_user if login_user is None
                                            else login_user)
        if public_address is not None:
            public_address = str(self._check_public(public_address))
        elif public_on_interface:
            raise SandboxError("public_on_interface needs a public_address")
        if public_on_interface and \
                ipaddress.ip_address(public_address) not in self.public_network:
            raise SandboxError("public address %s is not in the public network %s"
                               % (public_address, self.public_network))
        if not HOST_NAME_RE.match(name or "") or name in RESERVED_NAMES:
            raise SandboxError("invalid host name %r (letters, digits, '.', '_', '-'; at most "
                               "63 characters)" % (name,))
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise SandboxError("invalid address %r" % (address,)) from exc
        if ip not in self.network or ip in (self.network.network_address,
                                            self.network.broadcast_address) or \
                str(ip) == self.gateway:
            raise SandboxError("address %s is not a usable host address of %s (gateway %s)"
                               % (address, self.network, self.gateway))
        delay = self.boot_delay if delay is None else float(delay)
        with self._lock:
            if self._closed:
                raise SandboxError("this SandboxHosts is closed")
            old = self._hosts.get(name)
            if old is not None and old.state not in (FAILED, TERMINATED):
                raise SandboxError("host %s already exists (%s)" % (name, old.state))
            for other in self._hosts.values():
                if other.address == str(ip) and other.state not in (FAILED, TERMINATED):
                    raise SandboxError("address %s is already used by host %s"
                                       % (address, other.name))
            self._next_index += 1
            host = _Host(name, str(ip), "%s%s-%s" % (PREFIX, self.token, name),
                         "%s%s%03x" % (PREFIX, self.token, self._next_index % 4096),
                         self.host_root(name))
            host.login_user = login_user
            if public_on_interface:
                for other in self._hosts.values():
                    if other.interface_public == public_address and \
                            other.state not in (FAILED, TERMINATED):
                        raise SandboxError("public address %s is already used by host %s"
                                           % (public_address, other.name))
                host.interface_public = public_address
                self._public.pop(name, None)
            elif public_address is not None:
                self._public[name] = public_address
            host.thread = threading.Thread(target=self._boot, args=(host, delay, fresh),
                                           name="sandbox-boot-%s" % name, daemon=True)
            self._hosts[name] = host
        if old is not None:
            self._teardown(old)
        host.thread.start()
        return host.info()

    def ready(self, name):
        """True once the host's sshd accepts connections."""
        return self.info(name).state == RUNNING

    def wait_ready(self, name, timeout=30.0):
        """Wait until the host runs; SandboxError if it failed, was killed or took too long."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info(name)
            if info.state == RUNNING:
                return info
            if info.state in (FAILED, TERMINATED):
                raise SandboxError("host %s %s: %s" % (name, info.state, info.error or ""))
            if time.monotonic() > deadline:
                raise SandboxError("host %s not ready after %ss (state %s)"
                                   % (name, timeout, info.state))
            time.sleep(0.02)

    def kill(self, name):
        """Stop every process of the host and remove its namespace (its files stay)."""
        with self._lock:
            host = self._host(name)
        self._teardown(host)

    def close(self):
        """Remove every host, the bridge and the routing rule. Safe to call twice."""
        with self._lock:
            self._closed = True
            hosts = list(self._hosts.values())
        threads = [threading.Thread(target=self._teardown, args=(h,)) for h in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.firewall.delete()
        bridges = [self.bridge] + ([self.public_bridge] if self._public_bridge_made else [])
        if self._iptables_made:
            for bridge in bridges:
                _run("iptables", "-w", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j",
                     "ACCEPT", check=False)
            self._iptables_made = False
        if self._rule_made:
            for bridge in bridges:
                _run("ip", "rule", "del", "pref", str(RULE_PREF), "iif", bridge, "table",
                     self.table, check=False)
            _run("ip", "route", "flush", "table", self.table, check=False)
            self._rule_made = False
        if self._bridge_made:
            _run("ip", "link", "del", self.bridge, check=False)
            _run("ip", "link", "del", self.internet_link, check=False)
            self._bridge_made = False
        if self._public_bridge_made:
            _run("ip", "link", "del", self.public_bridge, check=False)
            self._public_bridge_made = False
        self._remove_mount_points()

    def timings(self, name):
        """Seconds from boot() to: network up ("network"), sshd started ("sshd"), ready."""
        with self._lock:
            return dict(self._host(name).timings)

    # ---------------------------------------------------------------------------- internals

    def _host(self, name):
        try:
            return self._hosts[name]
        except KeyError:
            raise SandboxError("no host named %s" % name) from None

    def _info(self, host):
        return dataclasses.replace(host.info(), public_address=host.interface_public or
                                   self._public.get(host.name))

    @staticmethod
    def _check_login_user(user):
        if user is None or user == "root":
            return None
        try:
            accounts.check_user(user)
        except ValueError as exc:
            raise SandboxError(str(exc)) from None
        return user

    def _check_public(self, address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise SandboxError("invalid public address %r" % (address,)) from exc
        if ip.version != 4 or ip.is_loopback or ip.is_multicast or ip.is_unspecified or \
                ip in self.network or str(ip) in (self.gateway, self.internet_address,
                                                  self.public_gateway):
            raise SandboxError("%s cannot be a public address (IPv4, not loopback, not in the "
                               "VPC %s, not the sandbox's own)" % (address, self.network))
        return ip

    def _publish(self, host, public):
        """Translate `public` to the host (needs self._lock): DNAT on this machine's output
        and a route, so that connecting to it needs no default route here."""
        if host.interface_public:
            target, bridge, source = host.interface_public, self.public_bridge, \
                self.public_gateway
        else:
            target, bridge, source = host.address, self.bridge, self.gateway
        if public in self._silent:
            self.firewall.set_silent(public, False)
            self._silent.discard(public)
        self.firewall.set_public(public, target)
        _run("ip", "route", "replace", "%s/32" % public, "dev", bridge, "src", source)
        host.published = public

    def _unpublish(self, host):
        """Stop translating the host's public address. The address stays the sandbox's: its
        route stays and the firewall drops this machine's packets to it (see network.py,
        ``silent``), so they never leave for the real address of that name."""
        if host.published is None:
            return
        self.firewall.set_public(host.published, None)
        if host.published not in self._silent:
            self.firewall.set_silent(host.published, True)
            self._silent.add(host.published)
        host.published = None

    def _apply_egress(self, host):
        wanted = self.internet and host.name in self._egress and host.network_up
        if wanted != host.egress_applied:
            self.firewall.set_egress(host.address, wanted)
            host.egress_applied = wanted

    def _ensure_public_bridge(self):
        """The public bridge (DigitalOcean's public network), made at the first host on it."""
        with self._lock:
            if self._public_bridge_made:
                return
            self._check_network_free(self.public_network)
            self._add_bridge(self.public_bridge, self.public_gateway, self.public_network)
            self._public_bridge_made = True

    def _create_bridge(self):
        self._check_network_free(self.network)
        if self.internet:
            self._check_network_free(ipaddress.ip_network(self.internet_address))
        self._bridge_made = True  # from here on, close() removes what was made
        # Nothing from the hosts leaves this machine: traffic from the bridge to any other
        # network hits an unreachable route (this machine's own addresses are matched earlier,
        # by the local table; the firewall guards the internet address among them).
        _run("ip", "route", "add", "unreachable", "default", "table", self.table)
        self._add_bridge(self.bridge, self.gateway, self.network)
        self.firewall.create()
        if self.internet:
            _run("ip", "link", "add", self.internet_link, "type", "bridge")
            _run("ip", "addr", "add", "%s/32" % self.internet_address, "dev",
                 self.internet_link)
            _run("ip", "link", "set", self.internet_link, "up")

    def _add_bridge(self, bridge, gateway, net):
        _run("ip", "link", "add", "name", bridge, "type", "bridge", "stp_state", "0",
             "forward_delay", "0")
        _run("ip", "addr", "add", "%s/%d" % (gateway, net.prefixlen), "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        _run("ip", "route", "add", str(net), "dev", bridge, "table", self.table)
        self._rule_made = True
        _run("ip", "rule", "add", "pref", str(RULE_PREF), "iif", bridge, "table", self.table)
        if _bridge_nf_iptables():
            # Machines with Docker installed pass bridged traffic through iptables' FORWARD
            # chain, whose policy Docker sets to DROP: let host-to-host traffic through.
            self._iptables_made = True
            _run("iptables", "-w", "-I", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT")

    def _check_network_free(self, net):
        """SandboxError when an address or route of this machine overlaps `net`."""
        for used, kind, line in machine_networks():
            if used.overlaps(net) and kind == "address":
                raise SandboxError("%s overlaps an address of this machine (%s); choose "
                                   "another cidr" % (net, line.split()[1]))
            if used.overlaps(net):
                raise SandboxError("%s overlaps a route of this machine (%s); choose another "
                                   "cidr" % (net, line))

    def _boot(self, host, delay, fresh):
        started = time.monotonic()
        try:
            self._prepare_files(host, fresh)
            if host.cancel.is_set():
                return
            self._create_network(host)
            host.timings["network"] = time.monotonic() - started
            host.state = BOOTING
            if delay > 0 and host.cancel.wait(delay):
                return
            self._start_sshd(host)
            host.timings["sshd"] = time.monotonic() - started
            self._wait_sshd(host)
            host.timings["ready"] = time.monotonic() - started
            with self._lock:
                if host.cancel.is_set():
                    return
                host.state = RUNNING
                self._write_known_hosts()
        except Exception as exc:  # pylint: disable=broad-except
            if host.cancel.is_set():
                return
            LOG.error("sandbox host %s failed to boot: %s", host.name, exc)
            host.error = str(exc)
            self._teardown(host, final_state=FAILED, join=False)

    def _prepare_files(self, host, fresh):
        root = host.root
        if fresh and os.path.isdir(root):
            remove_tree(root)
        internal = os.path.join(root, ".sandbox")
        for rel in [p.lstrip("/") for p in MOUNT_POINTS + (BIN_MOUNT,)] + [".sandbox"]:
            os.makedirs(os.path.join(root, rel), exist_ok=True)
        host_key = os.path.join(internal, "ssh_host_ed25519_key")
        if not os.path.exists(host_key):
            private, public = _new_ed25519()
            _write(host_key, private, 0o600)
            _write(host_key + ".pub", public + "\n")
        with open(host_key + ".pub", encoding="ascii") as handle:
            host.host_public_key = handle.read().strip()
        _supply_docker(root, self.python, self.docker_preinstalled)
        env = dict(self.env, PATH=SSH_PATH)
        config = "\n".join([
            "# sshd of sandbox host %s (%s), generated by devtools/sandbox/hosts.py."
            % (host.name, host.address),
            "Port 22",
            "HostKey %s" % host_key,
            "PidFile %s" % os.path.join(internal, "sshd.pid"),
        ] + self._login_config(host) + [
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            # Kinder than OpenSSH's defaults (MaxStartups 10:30:100, MaxSessions 10): with
            # those, connections through a jump host now and then dropped on a loaded machine
            # (EOF, or a channel closed without an exit status), cause not found yet. The pack
            # retries dropped handshakes and checks (README, the sandbox section).
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "SetEnv %s" % " ".join('"%s=%s"' % item for item in sorted(env.items())),
            "LogLevel INFO",
            "",
        ])
        _write(os.path.join(internal, "sshd_config"), config)
        _write(os.path.join(internal, "hosts"),
               "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n"
               % (host.address, host.name))
        lines = [
            "#!/bin/sh",
            "# PID 1 of sandbox host %s: runs in its network namespace and in new mount, UTS"
            % host.name,
            "# and PID namespaces; bind-mounts the per-host directories, then becomes sshd.",
            "set -e",
            "echo '%s' > /proc/sys/kernel/hostname" % host.name,
        ]
        for target in MOUNT_POINTS + (BIN_MOUNT,):
            lines.append("mkdir -p '%s'" % target)
            source = os.path.join(root, target.lstrip("/"))
            lines.append("mount --bind '%s' '%s'" % (source, target))
        lines += [
            "mount --bind '%s' /etc/hosts" % os.path.join(internal, "hosts"),
        ]
        lines += self._private_mounts(host)
        lines += _volume_mounts(internal)  # its own by-id devices and fstab
        lines += _apt_mounts(root)  # its own /etc/apt
        lines += [
            "mkdir -p /run/sshd",
            "exec %s -D -e -f '%s'" % (SSHD, os.path.join(internal, "sshd_config")),
            "",
        ]
        _write(os.path.join(internal, "boot.sh"), "\n".join(lines), 0o755)

    def _login_config(self, host):
        """sshd lines for who logs in; with a login user, writes the host's accounts."""
        if host.login_user is None:
            return ["AuthorizedKeysFile %s" % self.authorized_keys_path,
                    "PermitRootLogin prohibit-password"]
        accounts.write_files(host.root, host.login_user, self.ssh_public_key,
                             keep_env=sorted(self.env))
        return ["AuthorizedKeysFile .ssh/authorized_keys",
                "PermitRootLogin no",
                "AllowUsers %s" % host.login_user]

    def _private_mounts(self, host):
        """Boot lines giving the host its own /root, /home and /tmp (and, with a login user,
        its own accounts and sudoers). What the host must still see of this machine under
        those directories (this workdir: sshd's files; the fake docker's interpreter) is bound
        at the same path inside the host's copy first."""
        lines = []
        if host.login_user is not None:
            for path in accounts.FILES:
                lines.append("mount --bind '%s' '/etc/%s'" % (
                    os.path.join(host.root, "etc", path), path))
            lines.append("mount --bind '%s' /etc/sudoers.d"
                         % os.path.join(host.root, "etc", "sudoers.d"))
        needed = (self.workdir, os.path.dirname(os.path.dirname(self.python)))
        keep = {f(p) for p in needed for f in (os.path.abspath, os.path.realpath)}
        # A venv's interpreter is a symlink; its target (pyenv: under /root) too.
        keep.add(os.path.dirname(os.path.dirname(os.path.realpath(self.python))))
        for target, mode in PRIVATE_DIRS:
            copy = os.path.join(host.root, target.lstrip("/"))
            os.makedirs(copy, exist_ok=True)
            os.chmod(copy, mode)
            for path in sorted(keep):
                if path.startswith(target + "/"):
                    inner = os.path.join(copy, os.path.relpath(path, target))
                    os.makedirs(inner, exist_ok=True)
                    lines.append("mount --bind '%s' '%s'" % (path, inner))
            lines.append("mount --rbind '%s' '%s'" % (copy, target))
        return lines

    def _create_network(self, host):
        """AWS: eth0 in the VPC bridge, default route via this machine. DigitalOcean
        (public_on_interface): eth0 with the public address in the public bridge and the
        default route, eth1 with the VPC address."""
        _run("ip", "netns", "add", host.namespace)
        vpc_if = "eth0"
        batch = ["link set lo up"]
        if host.interface_public:
            self._ensure_public_bridge()
            vpc_if = "eth1"
            _run("ip", "link", "add", host.veth + "p", "type", "veth", "peer", "name", "eth0",
                 "netns", host.namespace)
            _run("ip", "link", "set", host.veth + "p", "master", self.public_bridge, "up")
            batch += ["addr add %s/%d dev eth0" % (host.interface_public,
                                                   self.public_network.prefixlen),
                      "link set eth0 up",
                      "route add default via %s" % self.public_gateway]
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", vpc_if, "netns",
             host.namespace)
        _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        batch += ["addr add %s/%d dev %s" % (host.address, self.network.prefixlen, vpc_if),
                  "link set %s up" % vpc_if]
        if not host.interface_public:
            batch.append("route add default via %s" % self.gateway)
        batch = "\n".join(batch + [""])
        result = subprocess.run(["ip", "-n", host.namespace, "-batch", "-"], input=batch,
                                capture_output=True, text=True, check=False, timeout=30)
        if result.returncode != 0:
            raise SandboxError("configuring %s failed: %s"
                               % (host.namespace, result.stderr.strip()))
        with self._lock:
            if host.cancel.is_set():
                return
            host.network_up = True
            if self._public.get(host.name):
                self._publish(host, self._public[host.name])
            self._apply_egress(host)

    def _start_sshd(self, host):
        internal = os.path.join(host.root, ".sandbox")
        with open(os.path.join(internal, "sshd.log"), "ab") as log:
            host.process = subprocess.Popen(  # pylint: disable=consider-using-with
                ["ip", "netns", "exec", host.namespace,
                 "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
                 "--mount-proc", "--propagation", "private", "--",
                 "/bin/sh", os.path.join(internal, "boot.sh")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                close_fds=True, start_new_session=True)

    def _wait_sshd(self, host):
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        while not host.cancel.is_set():
            if host.process.poll() is not None:
                raise SandboxError("sshd of %s exited with status %s; see %s" % (
                    host.name, host.process.returncode,
                    os.path.join(host.root, ".sandbox", "sshd.log")))
            try:
                # Marked: the runner_outside filter lets the sandbox's own checks through.
                with network.internal_connection(host.address, 22, timeout=0.5) as sock:
                    sock.settimeout(2.0)
                    if sock.recv(4) == b"SSH-":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SandboxError("sshd of %s did not answer within %ss"
                                   % (host.name, SSHD_START_TIMEOUT))
            time.sleep(0.02)

    def _teardown(self, host, final_state=TERMINATED, join=True):
        host.cancel.set()
        if join and host.thread is not None and host.thread is not threading.current_thread() \
                and host.thread.ident is not None:
            host.thread.join()
        with host.teardown_lock:
            # Kill the host's processes (its PID 1, sshd, first: the kernel then kills the rest
            # of its PID namespace) but not `unshare`, their parent outside, so that it reaps
            # sshd and exits by itself; nothing is left for this machine's init to reap.
            if os.path.exists(os.path.join("/run/netns", host.namespace)):
                spare = [host.process.pid] if host.process is not None else []
                _kill_netns(host.namespace, spare)
                _run("ip", "netns", "del", host.namespace, check=False)
            if host.process is not None:
                try:
                    host.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    host.process.kill()
                    host.process.wait()
                host.process = None
            _run("ip", "link", "del", host.veth, check=False)
            if host.interface_public:
                _run("ip", "link", "del", host.veth + "p", check=False)
            with self._lock:
                host.network_up = False
                with contextlib.suppress(network.NetworkError):
                    self._unpublish(host)
                    self._apply_egress(host)
                if host.state != FAILED:
                    host.state = final_state
                self._write_known_hosts()

    def _write_known_hosts(self):
        lines = []
        for host in self._hosts.values():
            if host.state == RUNNING and host.host_public_key:
                names = [host.address, host.interface_public, self._public.get(host.name)]
                names = ",".join(a for a in names if a)
                lines.append("%s %s\n" % (names, host.host_public_key))
        _write(self.known_hosts_path, "".join(lines))

    def _remove_mount_points(self):
        created = [p for p in MOUNT_POINTS if p not in self._preexisting_mounts]
        if not created or any(ns.startswith(PREFIX) for ns in _list_netns()):
            return  # another sandbox may have them mounted
        for path in created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
