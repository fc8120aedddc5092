#!/usr/bin/env python3
"""A stand-in for Docker Engine and Docker Compose v2 on the sandbox hosts.

This is NOT Docker: Docker Engine cannot run where the sandbox runs, so every sandbox host gets
this program as its ``docker``. It accepts the docker CLI calls the pack's bootstrap makes,
validates compose files the way ``docker compose`` does, and starts one plain background
process per service (a "fake container") that listens on the service's published ports, so
that the pack's real SSH bootstrap and network health checks have something to talk to.

* ``docker version [--format json]``, ``docker info``, ``docker compose version`` and
  ``docker compose [-p NAME] -f FILE`` with ``config [-q]``, ``up -d [--remove-orphans]
  [--no-deps] [--force-recreate] [SERVICE...]``
  (idempotent: an unchanged service keeps running, a changed one is recreated), ``ps [-a]
  [--format json]``, ``down``, ``logs [SERVICE...]``, ``exec [-T] SERVICE CMD...``.
* Compose files are validated (YAML 1.2 scalars, duplicate keys, top-level and service keys,
  image, ports, environment, env_file, volumes, command, restart, depends_on, healthcheck,
  network_mode): errors exit 1 naming the service and the field. ``${VAR}`` interpolation
  (and so ``.env``), profiles and builds are not simulated and are refused.
* A fake container (log in ``/var/log/dialog/fake-docker/<name>.log``) answers HTTP 200 with a
  small JSON body (``/metrics``: Prometheus text) on every published TCP port and STUN Binding
  Requests (RFC 5389) on every published UDP port; a port in use fails ``up`` with "port is
  already allocated". Ranges of more than 16 ports (a TURN relay range) and sctp are validated,
  not served; with ``network_mode: host`` the container ports are served.
* Images (when installed from the sandbox mirror's package, see "Images, registries and
  `docker login`" below): ``docker login SERVER -u USER --password-stdin`` (checked against the
  registry, stored in ~/.docker/config.json like Docker), ``docker pull [-q] IMAGE``, ``docker
  image inspect IMAGE...``, ``compose pull [-q] [SERVICE...]``; ``up`` pulls missing images
  first, failing with the daemon's words ("no basic auth credentials", "unauthorized:
  authentication required", "manifest unknown") as Docker does.
* Bind mounts as Docker makes them: a single-file bind mount shows the container the file as it
  was when the container started (Docker binds the inode; replacing the file by rename, as every
  editor and the pack's upload do, leaves the container on the old one), a directory bind shows
  the directory's current files.
* ``exec`` on an nginx image simulates ``nginx [-c FILE] -t [-q]`` and ``nginx [-c FILE] -s
  reload``: the configuration is read through the container's mounts (so a reload through a
  single-file bind reads the old file), must exist and have balanced braces, and the loaded
  configuration's sha256 is logged and kept in the container's state (``nginx_config``).
* ``exec`` simulates ``pg_isready``, ``nodetool status|cleanup|decommission`` and
  ``/opt/docker/bin/cli create-user|admin-grant --login NAME`` (a second create of a login
  fails with "already exists"); anything else exits 127.
* Cassandra: a service whose image name contains "cassandra" or that sets ``CASSANDRA_*``
  variables is a ring member configured like the official image (``CASSANDRA_SEEDS``,
  ``_BROADCAST_ADDRESS`` or ``_LISTEN_ADDRESS``, ``_CLUSTER_NAME``, ``_DC``, ``_RACK``,
  ``_NUM_TOKENS``; without an address it advertises 172.17.0.x, or the host's with
  ``network_mode: host``). Members gossip with their seeds every half second over HTTP
  (``/_fake/ring``) on the published port 7000 (unpublished: the node stays alone). A seed is
  UN at once; another node is UJ until it has reached a seed and then for
  ``FAKE_CASSANDRA_JOIN_SECONDS`` (default 1; the service's environment, else ``up``'s), and UN
  at once when recreated after that. A member silent for ``FAKE_CASSANDRA_DOWN_SECONDS``
  (default 4) is DN. A node keeps its identity (host id, bootstrapped) in the directory bound at
  /var/lib/cassandra. ``-Dcassandra.replace_address_first_boot=ADDR`` in JVM_EXTRA_OPTS replaces
  a dead node as Cassandra 4 does (see Ring: shadow round, refusals, UJ then UN, the old
  address leaves the ring).

No images, isolation, volumes, real services or restart policies. State is kept in
``/var/lib/dialog/fake-docker`` (``FAKE_DOCKER_STATE``), logs in ``/var/log/dialog/fake-docker``
(``FAKE_DOCKER_LOGS``): per host on a sandbox host, thanks to its mount namespace.
"""

import binascii
import contextlib
import errno
import fcntl
import hashlib
import http.server
import io
import json
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import yaml

try:
    from . import real_servers
    from .real_servers import container as real_container
except ImportError:     # run as a script on a host: the modules are beside it
    sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "real_servers.zip"))
    import real_servers  # pylint: disable=import-error
    from real_servers import container as real_container  # pylint: disable=import-error

STATE_DIR = os.environ.get("FAKE_DOCKER_STATE", "/var/lib/dialog/fake-docker")
LOG_DIR = os.environ.get("FAKE_DOCKER_LOGS", "/var/log/dialog/fake-docker")
DOCKER_VERSION, API_VERSION, COMPOSE_VERSION = "27.3.1", "1.47", "2.29.7"
RING_PORT, GOSSIP_SECONDS, MAX_SERVED_RANGE, START_TIMEOUT = 7000, 0.5, 16, 10.0
STUN_MAGIC = 0x2112A442
TOP_LEVEL_KEYS = {"services", "volumes", "networks", "name", "version"}
UNSUPPORTED_TOP_LEVEL = {"configs", "secrets", "include"}
SERVICE_KEYS = set("""
    annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command
    container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime
    cpu_shares cpus cpuset credential_spec depends_on deploy device_cgroup_rules devices dns
    dns_opt dns_search domainname entrypoint env_file environment expose external_links
    extra_hosts group_add healthcheck hostname image init ipc isolation labels links logging
    mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode networks
    oom_kill_disable oom_score_adj pid pids_limit platform ports privileged pull_policy read_only
    restart runtime security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt
    sysctls tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir""".split())
UNSUPPORTED_SERVICE_KEYS = {"extends", "configs", "secrets", "scale", "develop", "profiles"}
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
DURATION_RE = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
PORT_RE = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):)??"
    r"(?:(?P<host>\d*(?:-\d+)?):)?(?P<container>\d+(?:-\d+)?)(?:/(?P<proto>[a-z]+))?$")


class DockerError(Exception):
    """A user-facing failure: printed to stderr, exit status 1."""


def warn(message):
    sys.stderr.write("WARN[0000] %s\n" % message)


def progress(name, *steps, kind="Container"):
    # docker compose v2 in a non-TTY prints one line per step to stderr.
    for step in steps:
        sys.stderr.write(" %s %s  %s\n" % (kind, name, step))
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# Compose files: YAML 1.2 scalars (as compose's Go parser reads them), duplicate keys rejected.

class _ComposeLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    pass


_ComposeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[1] not in
            ("int", "float", "bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, _regexp, _first in (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                  r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789.")):
    _ComposeLoader.add_implicit_resolver("tag:yaml.org,2002:" + _tag, re.compile(_regexp),
                                         list(_first))


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping key %r already defined" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_ComposeLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def unescape_dollars(value, where):
    """`$$` -> `$`; any other `$` would be interpolation, which is not simulated."""
    if isinstance(value, dict):
        return {k: unescape_dollars(v, "%s.%s" % (where, k) if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_dollars(v, "%s.%d" % (where, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value.replace("$$", ""):
        raise DockerError("%s: variable interpolation (%r) is not supported by the sandbox's "
                          "fake docker; write the value, or $$ for a literal $" % (where, value))
    return value.replace("$$", "$") if isinstance(value, str) else value


def read_env_file(path):
    values = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = (part.strip() for part in line.partition("="))
            if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", key):
                raise DockerError("failed to read %s: line %d: unexpected character in variable "
                                  "name %r" % (path, number, key))
            quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
            values[key] = value[1:-1] if quoted else value
    return values


def _require(ok, service, field, message):
    if not ok:
        raise DockerError("services.%s%s %s" % (service, "." + field if field else "", message))


def _port_range(text, service, field):
    _require(re.match(r"^\d+(-\d+)?$", text), service, field, "invalid port %r" % text)
    low, _, high = text.partition("-")
    low, high = int(low), int(high or low)
    _require(1 <= low <= high <= 65535, service, field,
             "invalid port range %r (ports are 1-65535)" % text)
    return low, high


def parse_ports(service, ports, network_mode):
    """[{host_ip, host_port, container_port, protocol, served}]: one entry per served port."""
    _require(isinstance(ports, list), service, "ports", "must be a list")
    result = []
    for index, entry in enumerate(ports):
        field = "ports.%d" % index
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = str(entry)
        if isinstance(entry, str):
            match = PORT_RE.match(entry)
            _require(match, service, field, "invalid port spec %r: expected "
                     "[[IP:]HOST:]CONTAINER[/PROTOCOL]" % entry)
            host_ip, host = (match.group("ip") or "").strip("[]"), match.group("host") or ""
            container, protocol = match.group("container"), match.group("proto") or "tcp"
        else:
            _require(isinstance(entry, dict), service, field,
                     "must be a string, number or mapping")
            unknown = sorted(set(entry) - {"target", "published", "host_ip", "protocol", "mode",
                                           "name", "app_protocol"}) + [None]
            _require(unknown[0] is None, service, field,
                     "Additional property %s is not allowed" % unknown[0])
            target, published = entry.get("target"), entry.get("published", "")
            host_ip, protocol = entry.get("host_ip", "") or "", entry.get("protocol", "tcp")
            _require(not isinstance(target, bool) and isinstance(target, (int, str)) and
                     re.match(r"^\d+(-\d+)?$", str(target)), service, field + ".target",
                     "is required and must be a port number")
            _require(not isinstance(published, bool) and isinstance(published, (int, str)),
                     service, field + ".published", "must be a string or number")
            _require(isinstance(host_ip, str), service, field + ".host_ip", "must be a string")
            _require(entry.get("mode", "ingress") in ("host", "ingress"), service,
                     field + ".mode", "must be one of host, ingress")
            host, container = str(published), str(target)
        _require(protocol in ("tcp", "udp", "sctp"), service, field,
                 "invalid protocol %r (tcp, udp or sctp)" % protocol)
        _require(":" not in host_ip, service, field,
                 "IPv6 host addresses are not supported by the sandbox")
        if host_ip:
            try:
                socket.inet_aton(host_ip)
            except OSError as exc:
                raise DockerError("services.%s.%s invalid IP address %r"
                                  % (service, field, host_ip)) from exc
        c_low, c_high = _port_range(container, service, field)
        h_low, h_high = _port_range(host, service, field) if host else (0, 0)  # 0: ephemeral
        _require(not host or h_high - h_low == c_high - c_low or c_low == c_high, service, field,
                 "host and container port ranges differ in size (%r)" % (entry,))
        count = c_high - c_low + 1
        if count > MAX_SERVED_RANGE or protocol == "sctp":  # one entry for the whole range
            result.append({"host_ip": host_ip, "host_port": c_low if network_mode == "host"
                           else h_low, "container_port": c_low, "protocol": protocol,
                           "served": False, "range": count})
            continue
        for offset in range(1 if c_low == c_high else count):
            # "8000-8010:80" publishes one of the host ports.
            host_port = h_low + offset if h_low and c_low != c_high else h_low
            result.append({"host_ip": host_ip, "container_port": c_low + offset,
                           "host_port": c_low + offset if network_mode == "host" else host_port,
                           "protocol": protocol, "served": True})
    return result


def service_environment(service, svc, project_dir):
    env_files = svc.get("env_file")
    env_files = [env_files] if isinstance(env_files, str) else env_files or []
    _require(isinstance(env_files, list), service, "env_file", "must be a string or a list")
    result = {}
    for index, item in enumerate(env_files):
        path = item.get("path") if isinstance(item, dict) else item
        _require(isinstance(path, str), service, "env_file.%d" % index, "must be a path")
        full = os.path.join(project_dir, path)
        if os.path.isfile(full):
            result.update(read_env_file(full))
        elif not isinstance(item, dict) or item.get("required", True):
            raise DockerError("env file %s not found: stat %s: no such file or directory"
                              % (full, full))
    value = svc.get("environment")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _require(isinstance(item, str) and item and not item.startswith("="), service,
                     "environment.%d" % index, "must be a string KEY=VALUE")
            key, sep, val = item.partition("=")
            result[key] = val if sep else os.environ.get(key)
        return result
    _require(isinstance(value, (dict, type(None))), service, "environment",
             "must be a mapping or a list of KEY=VALUE strings")
    for key, item in (value or {}).items():
        _require(isinstance(key, str) and key and "=" not in key, service, "environment",
                 "invalid variable name %r" % (key,))
        _require(item is None or isinstance(item, (str, int, float, bool)), service,
                 "environment.%s" % key, "must be a string, number, boolean or null")
        result[key] = os.environ.get(key) if item is None else \
            str(item).lower() if isinstance(item, bool) else str(item)
    return result


def check_volumes(service, volumes, declared, project_dir):
    _require(isinstance(volumes, list), service, "volumes", "must be a list")
    for index, entry in enumerate(volumes):
        field = "volumes.%d" % index
        if isinstance(entry, str):
            parts = entry.split(":")
            _require(len(parts) <= 3, service, field, "invalid volume spec %r" % entry)
            _require(len(parts) < 3 or re.match(r"^[a-zA-Z,]+$", parts[2]), service, field,
                     "invalid mode %r" % parts[-1])
            source, target = parts[:2] if len(parts) > 1 else ("", parts[0])
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            _require(isinstance(entry, dict), service, field, "must be a string or a mapping")
            kind, source, target = entry.get("type"), entry.get("source", ""), entry.get("target")
            _require(kind in ("bind", "volume", "tmpfs", "npipe", "cluster", "image"), service,
                     field + ".type", "must be one of bind, volume, tmpfs")
            path = os.path.join(project_dir, source or "") if kind == "bind" else ""
            _require(kind != "bind" or source and os.path.exists(path), service,
                     field + ".source", "bind source path does not exist: %s" % path)
        _require(isinstance(target, str) and target.startswith("/"), service, field,
                 "target %r must be an absolute path" % (target,))
        if kind == "volume" and source and source not in declared:
            raise DockerError('service "%s" refers to undefined volume %s: invalid compose '
                              'project' % (service, source))


def check_healthcheck(service, value):
    """Validate; True when the health check is enabled."""
    _require(isinstance(value, dict), service, "healthcheck", "must be a mapping")
    unknown = sorted(set(value) - {"test", "interval", "timeout", "retries", "start_period",
                                   "start_interval", "disable"}) + [None]
    _require(unknown[0] is None, service, "healthcheck",
             "Additional property %s is not allowed" % unknown[0])
    test = value.get("test")
    _require(not isinstance(test, list) or test and all(isinstance(t, str) for t in test) and
             test[0] in ("NONE", "CMD", "CMD-SHELL"), service, "healthcheck.test",
             "a list must start with NONE, CMD or CMD-SHELL")
    _require(isinstance(test, (list, str, type(None))), service, "healthcheck.test",
             "must be a string or a list")
    for key in ("interval", "timeout", "start_period", "start_interval"):
        _require(key not in value or isinstance(value[key], str) and
                 DURATION_RE.match(value[key]), service, "healthcheck.%s" % key,
                 "invalid duration %r (like 30s, 1m30s)" % (value.get(key),))
    retries = value.get("retries", 0)
    _require(not isinstance(retries, bool) and isinstance(retries, int) and retries >= 0,
             service, "healthcheck.retries", "must be a non-negative integer")
    _require(isinstance(value.get("disable", False), bool), service, "healthcheck.disable",
             "must be a boolean")
    return not value.get("disable") and test != ["NONE"]


def check_depends_on(service, value, names):
    if isinstance(value, dict):
        for dep, options in value.items():
            _require(options is None or isinstance(options, dict), service,
                     "depends_on.%s" % dep, "must be a mapping")
            condition = (options or {}).get("condition", "service_started")
            _require(condition in ("service_started", "service_healthy",
                                   "service_completed_successfully"), service,
                     "depends_on.%s.condition" % dep, "invalid condition %r" % condition)
    else:
        _require(isinstance(value, list), service, "depends_on", "must be a list or a mapping")
        _require(all(isinstance(v, str) for v in value), service, "depends_on",
                 "must be a list of service names")
    for dep in value:
        _require(dep != service, service, "depends_on", "a service cannot depend on itself")
        if dep not in names:
            raise DockerError('service "%s" depends on undefined service "%s": invalid compose '
                              'project' % (service, dep))
    return list(value)


def validate_service(name, svc, project):
    _require(re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", name), name, None,
             "invalid service name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    _require(isinstance(svc, dict), name, None, "must be a mapping")
    for key in svc:
        _require(isinstance(key, str) and (key in SERVICE_KEYS | UNSUPPORTED_SERVICE_KEYS or
                                           key.startswith("x-")), name, None,
                 "Additional property %s is not allowed" % (key,))
    _require("build" not in svc or "image" in svc, name, "build",
             "is not supported by the sandbox's fake docker (no builds): set image")
    for key in sorted(UNSUPPORTED_SERVICE_KEYS & set(svc)):
        _require(False, name, key, "is not supported by the sandbox's fake docker")
    if "image" not in svc:
        raise DockerError('service "%s" has neither an image nor a build context specified: '
                          'invalid compose project' % name)
    image = svc["image"]
    _require(isinstance(image, str) and image.strip(), name, "image", "must be a non-empty string")
    _require(re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.:/@-]*$", image), name, "image",
             "invalid reference format: %r" % image)
    _require(isinstance(svc.get("container_name", ""), str), name, "container_name",
             "must be a string")
    network_mode = svc.get("network_mode")
    if network_mode is not None:
        _require(isinstance(network_mode, str) and re.match(
            r"^(host|bridge|none|default|(service|container):[a-zA-Z0-9][a-zA-Z0-9_.-]*)$",
            network_mode), name, "network_mode", "invalid value %r" % (network_mode,))
        _require(not network_mode.startswith("service:") or network_mode[8:] in
                 project["services"], name, "network_mode",
                 "refers to undefined service %r" % network_mode[8:])
        _require("networks" not in svc, name, "network_mode", "and networks cannot be combined")
    ports = parse_ports(name, svc.get("ports") or [], network_mode)
    if network_mode == "host" and svc.get("ports"):
        warn("service %s: published ports are discarded when using host network mode (the "
             "sandbox serves the container ports)" % name)
    environment = service_environment(name, svc, project["dir"])
    for field in ("command", "entrypoint"):
        value = svc.get(field)
        _require(value is None or isinstance(value, str) or isinstance(value, list) and
                 all(isinstance(v, str) for v in value), name, field,
                 "must be a string or a list of strings")
    _require("restart" not in svc or isinstance(svc["restart"], str) and
             RESTART_RE.match(svc["restart"]), name, "restart", "invalid restart policy %r "
             "(no, always, on-failure[:N], unless-stopped)" % (svc.get("restart"),))
    check_volumes(name, svc.get("volumes") or [], project["volumes"], project["dir"])
    depends = check_depends_on(name, svc.get("depends_on") or [], project["services"])
    health = "healthcheck" in svc and check_healthcheck(name, svc["healthcheck"])
    image_base = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    # The hash covers the whole resolved definition, as compose's com.docker.compose.config-hash.
    resolved = dict(svc, environment=environment)
    resolved.pop("env_file", None)
    return {
        "image": image, "ports": ports, "environment": environment, "command": svc.get("command"),
        "network_mode": network_mode, "depends_on": depends, "healthcheck": health,
        "name": svc.get("container_name") or "%s-%s-1" % (project["name"], name),
        "cassandra": "cassandra" in image_base or any(k.startswith("CASSANDRA_")
                                                      for k in environment),
        "config_hash": hashlib.sha256(
            json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest(),
        "raw": resolved}


def load_project(opts):
    """The project of `-f FILE` (and `-p NAME`): its services validated, in start order."""
    if not opts.get("-f"):
        raise DockerError("no configuration file provided: the sandbox's fake docker needs "
                          "-f FILE")
    path = os.path.abspath(opts["-f"])
    if not os.path.isfile(path):
        raise DockerError("open %s: no such file or directory" % path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DockerError("yaml: %s: %s" % (path, str(exc).replace("\n", " "))) from exc
    data, invalid = {} if data is None else data, "validating %s: " % path
    if not isinstance(data, dict):
        raise DockerError(invalid + "top-level object must be a mapping")
    for key in data:
        if key in UNSUPPORTED_TOP_LEVEL:
            raise DockerError(invalid + "%s is not supported by the sandbox's fake docker" % key)
        if not isinstance(key, str) or key not in TOP_LEVEL_KEYS and not key.startswith("x-"):
            raise DockerError(invalid + "(root) Additional property %s is not allowed" % key)
    if "version" in data:
        warn("%s: the attribute `version` is obsolete, it will be ignored, please remove it to "
             "avoid potential confusion" % path)
    data = unescape_dollars(data, "")
    services = data.get("services")
    if not isinstance(services, dict):
        raise DockerError(invalid + ("services must be a mapping" if services is not None
                                     else "services must be present (no service defined)"))
    for key in ("volumes", "networks"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise DockerError(invalid + "%s must be a mapping" % key)
    project_dir = os.path.dirname(path)
    name = opts.get("-p") or data.get("name") or os.path.basename(project_dir)
    sanitized = re.sub(r"[^a-z0-9_-]", "", str(name).lower()).lstrip("_-")
    if not isinstance(name, str) or not sanitized:
        raise DockerError("invalid project name %r" % (name,))
    if not (opts.get("-p") or data.get("name")):
        name = sanitized
    elif not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
        raise DockerError('invalid project name "%s": must consist only of lowercase alphanumeric '
                          'characters, hyphens, and underscores as well as start with a letter '
                          'or number' % name)
    project = {"name": name, "dir": project_dir, "file": path, "services": services,
               "volumes": dict(data.get("volumes") or {}),
               "networks": dict(data.get("networks") or {})}
    normalized, names = {}, {}
    try:
        for svc_name, svc in services.items():
            normalized[svc_name] = validate_service(str(svc_name), svc, project)
    except DockerError as exc:
        raise DockerError(invalid + str(exc)) from exc
    for svc_name, svc in normalized.items():
        if names.setdefault(svc["name"], svc_name) != svc_name:
            raise DockerError('services.%s: container name "%s" is already in use by service '
                              '%s' % (svc_name, svc["name"], names[svc["name"]]))
    order, marks = [], {}

    def visit(service, path):
        if marks.get(service) == "visiting":
            raise DockerError("dependency cycle detected: %s" % " -> ".join(path + [service]))
        if service not in marks:
            marks[service] = "visiting"
            for dep in normalized[service]["depends_on"]:
                visit(dep, path + [service])
            marks[service] = "done"
            order.append(service)

    for service in normalized:
        visit(service, [])
    project["services"] = {service: normalized[service] for service in order}
    return project


# --------------------------------------------------------------------------------------------
# State.

def _path(*parts):
    return os.path.join(STATE_DIR, *parts)


@contextlib.contextmanager
def locked_state():
    os.makedirs(_path("containers"), exist_ok=True)
    with open(_path("lock"), "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state()
        try:
            yield state
        finally:  # also after a failure: containers started before it must stay tracked
            write_json(_path("state.json"), state)


def read_state():
    state = read_json(_path("state.json"), {})
    for key in ("containers", "networks", "users"):
        state.setdefault(key, {})
    return state


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def container_running(record):
    """True when the container's process runs (not a zombie) and is this container's."""
    try:
        with open("/proc/%d/stat" % record["pid"], encoding="utf-8") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        with open("/proc/%d/cmdline" % record["pid"], "rb") as handle:
            return _path("containers", record["name"] + ".json").encode() in handle.read()
    except (OSError, IndexError, TypeError):
        return False


# --------------------------------------------------------------------------------------------
# Starting and stopping fake containers.

def cassandra_settings(project, service, svc):
    env = svc["environment"]
    broadcast = env.get("CASSANDRA_BROADCAST_ADDRESS") or env.get("CASSANDRA_LISTEN_ADDRESS")
    if not broadcast and svc["network_mode"] == "host":  # the host's primary address
        out = ""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                                 capture_output=True, text=True, check=False, timeout=5).stdout
        broadcast = (re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out) + ["127.0.0.1"])[0]
    elif not broadcast:
        broadcast = "172.17.0.%d" % (2 + sorted(project["services"]).index(service))
    seeds = [item.strip().partition(":") for item in
             (env.get("CASSANDRA_SEEDS") or broadcast).split(",") if item.strip()]
    # A node's identity (host id, tokens, "bootstrap completed") lives in its system keyspace,
    # in its data directory: kept in the directory bound at /var/lib/cassandra when there is
    # one, so a new, empty data volume is a new node, whatever the host's name.
    data_dirs = [v.split(":")[0] for v in svc["raw"].get("volumes") or []
                 if isinstance(v, str) and v.split(":")[1:2] == ["/var/lib/cassandra"]]
    persisted = os.path.join(data_dirs[0], "fake-cassandra-system.json") if data_dirs else \
        _path("cassandra", "%s-%s.json" % (project["name"], service))
    if data_dirs:
        os.makedirs(data_dirs[0], exist_ok=True)  # Docker creates a missing bind source
    saved = read_json(persisted, {})
    if not saved.get("host_id"):
        saved = {"host_id": str(uuid.uuid4()), "bootstrapped": False}
        write_json(persisted, saved)

    def number(key, default):
        with contextlib.suppress(ValueError):
            return float(env.get(key) or os.environ.get(key) or default)
        return default

    return {
        "address": broadcast, "persisted": persisted, "host_id": saved["host_id"],
        "seeds": [[host, int(port) if port.isdigit() else RING_PORT] for host, _, port in seeds],
        "cluster": env.get("CASSANDRA_CLUSTER_NAME") or "Test Cluster",
        "dc": env.get("CASSANDRA_DC") or "datacenter1",
        "rack": env.get("CASSANDRA_RACK") or "rack1",
        "tokens": int(number("CASSANDRA_NUM_TOKENS", 16)),
        "join_seconds": number("FAKE_CASSANDRA_JOIN_SECONDS", 1.0),
        "down_seconds": number("FAKE_CASSANDRA_DOWN_SECONDS", 4.0),
        "bootstrapped": bool(saved.get("bootstrapped")),
        "saved_rack": saved.get("rack"),
        "replace": replace_option("%s %s" % (env.get("JVM_OPTS") or "",
                                             env.get("JVM_EXTRA_OPTS") or "")),
        # Cassandra's ring delay (cassandra.ring_delay_ms, 30 s): how long a replacement's
        # shadow round tries the seeds before "Unable to gossip with any peers".
        "ring_delay": number("FAKE_CASSANDRA_RING_DELAY_SECONDS", 30.0),
        "reachable": any(p["container_port"] == RING_PORT and p["protocol"] == "tcp" and
                         p["served"] for p in svc["ports"])}


REPLACE_RE = re.compile(r"-Dcassandra\.replace_address(_first_boot)?=(\S+)")


def replace_option(jvm_options):
    """{"address", "first_boot"} from the JVM options (the official image's cassandra-env.sh
    appends $JVM_EXTRA_OPTS to JVM_OPTS), or None."""
    found = REPLACE_RE.findall(jvm_options or "")
    if not found:
        return None
    first_boot, address = found[-1]
    return {"address": address.strip("/"), "first_boot": bool(first_boot)}


def start_container(project, service, state):
    """Start the fake container process for service; updates state. Raises DockerError."""
    svc = project["services"][service]
    if real_servers.for_image(svc["image"]) is not None:
        return start_real_container(project, service, state)
    name = svc["name"]
    record = state["containers"].get(name)
    if not record or record.get("config_hash") != svc["config_hash"]:
        record = {"id": uuid.uuid4().hex + uuid.uuid4().hex, "name": name,
                  "project": project["name"], "service": service, "image": svc["image"],
                  "command": svc["command"], "config_hash": svc["config_hash"],
                  "config_files": [project["file"]], "working_dir": project["dir"],
                  "ports": svc["ports"], "health": svc["healthcheck"], "created": time.time(),
                  "pid": None, "started": None}
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(LOG_DIR, name + ".log"))
    spec = {"name": name, "id": record["id"], "project": project["name"], "service": service,
            "image": svc["image"], "ports": svc["ports"], "environment": svc["environment"],
            "network_mode": svc["network_mode"], "log": os.path.join(LOG_DIR, name + ".log"),
            "control": _path("containers", name + ".sock"),
            "ready": _path("containers", name + ".ready"),
            "cassandra": cassandra_settings(project, service, svc) if svc["cassandra"] else None,
            "volumes": svc["raw"].get("volumes") or []}
    # nginx reads its configuration before it listens: one it cannot read fails the start.
    binds = snapshot_binds(name, svc)
    loaded = nginx_load(dict(record, binds=binds), nginx_conf_path(svc["command"] or [])) \
        if is_nginx(record) else None
    spec_path = _path("containers", name + ".json")
    write_json(spec_path, spec)
    with contextlib.suppress(OSError):
        os.unlink(spec["ready"])
    os.makedirs(LOG_DIR, exist_ok=True)
    with open(spec["log"], "ab") as log:
        child = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, os.path.abspath(__file__), "_container", spec_path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            start_new_session=True, cwd="/")
    deadline = time.monotonic() + START_TIMEOUT
    while read_json(spec["ready"]) is None and child.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    ready = read_json(spec["ready"]) or {"error": (
        "container did not start within %ss" % START_TIMEOUT if child.poll() is None else
        "container process exited with status %s" % child.returncode)}
    if ready.get("error"):
        with contextlib.suppress(OSError):
            child.kill()
        child.wait()
        state["containers"][name] = dict(record, pid=None)
        raise DockerError("Error response from daemon: driver failed programming external "
                          "connectivity on endpoint %s (%s): %s"
                          % (name, record["id"][:12], ready["error"]))
    record.update(pid=child.pid, started=time.time(),
                  ports=ready["ports"] + [p for p in svc["ports"] if not p["served"]],
                  binds=binds, nginx_config=loaded)
    write_data_marks(svc)
    state["containers"][name] = record
    # Not waited for: once this CLI exits, the container is re-parented (to the host's init).
    child.returncode = 0
    return record


def host_private_address():
    """The host's address the way compose's DNS would answer for a service: its first
    private IPv4 address (a DigitalOcean host's public one is on eth0)."""
    out = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             capture_output=True, text=True, check=False, timeout=5).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    private = [a for a in found if re.match(r"^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)", a)]
    return (private + found + ["127.0.0.1"])[0]


def real_mounts(project, svc):
    """[(host path, container path, read only)] of the service's volumes."""
    mounts = []
    for entry in svc["raw"].get("volumes") or []:
        if not isinstance(entry, str):
            raise DockerError("services.%s.volumes: the sandbox's real-server containers take "
                              "the short volume syntax only" % svc["name"])
        parts = entry.split(":")
        source = parts[0]
        if not source.startswith("/"):  # a named volume: Docker keeps it in its own storage
            source = _path("volumes", "%s_%s" % (project["name"], source))
        options = parts[2].split(",") if len(parts) > 2 else []
        mounts.append((source, parts[1].rstrip("/") or "/", "ro" in options))
    return mounts


def start_real_container(project, service, state):
    """Start Debian's own server for the service's image (real_servers): see that package."""
    svc = project["services"][service]
    module = real_servers.for_image(svc["image"])
    name = svc["name"]
    for port in svc["ports"]:
        if port["host_port"] and port["host_port"] != port["container_port"]:
            raise DockerError("services.%s.ports: the sandbox runs %s as a real server in the "
                              "host's network: publish it on the same port (%d:%d)" % (
                                  service, svc["image"], port["container_port"],
                                  port["container_port"]))
    record = state["containers"].get(name)
    if not record or record.get("config_hash") != svc["config_hash"]:
        record = {"id": uuid.uuid4().hex + uuid.uuid4().hex, "name": name,
                  "project": project["name"], "service": service, "image": svc["image"],
                  "command": svc["command"], "config_hash": svc["config_hash"],
                  "config_files": [project["file"]], "working_dir": project["dir"],
                  "ports": [dict(p, host_port=p["host_port"] or p["container_port"])
                            for p in svc["ports"]],
                  "health": svc["healthcheck"], "created": time.time(),
                  "pid": None, "started": None, "real": module.__name__.rsplit(".", 1)[-1]}
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(LOG_DIR, name + ".log"))
    command = svc["command"]
    if isinstance(command, str):
        command = command.split()
    spec = {"name": name, "service": service, "project": project["name"],
            "image": svc["image"], "environment": svc["environment"], "command": command,
            "mounts": real_mounts(project, svc), "address": host_private_address(),
            "project_dir": project["dir"], "log": os.path.join(LOG_DIR, name + ".log"),
            "services": sorted(project["services"]),
            "exit_file": _path("containers", name + ".exit"),
            "etc_dir": _path("containers", name + ".etc")}
    spec_path = _path("containers", name + ".json")
    write_json(spec_path, spec)
    with contextlib.suppress(OSError):
        os.unlink(spec["exit_file"])
    os.makedirs(LOG_DIR, exist_ok=True)
    with open(spec["log"], "ab") as log:
        child = subprocess.Popen(  # pylint: disable=consider-using-with
            real_container.launch_argv(sys.executable, os.path.abspath(__file__), spec_path),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            start_new_session=True, cwd="/")
    record.update(pid=child.pid, started=time.time(), spec=spec, exit_file=spec["exit_file"])
    state["containers"][name] = record
    # Docker returns once the process runs; this waits until the published TCP ports listen,
    # so a server that refuses its configuration and exits at start fails `up` with its log.
    seconds = getattr(module, "START_SECONDS", 60)
    addresses = ("127.0.0.1", spec["address"])
    deadline = time.monotonic() + seconds
    while child.poll() is None and time.monotonic() < deadline and \
            not real_container.listening(record["ports"], addresses):
        time.sleep(0.1)
    if child.poll() is not None:
        raise DockerError("Error response from daemon: container %s (%s) exited with status "
                          "%s at start; its log ends:\n%s" % (
                              name, record["id"][:12], child.returncode,
                              real_container.log_tail(spec["log"])))
    if not real_container.listening(record["ports"], addresses):
        warn("container %s: its published ports do not listen after %ss" % (name, seconds))
    child.returncode = 0
    return record


DATA_ROOT = "/var/lib/dialog/"


def snapshot_binds(name, svc):
    """[{"target", "source", "file"}] of the service's bind mounts. A single-file bind gets a
    copy of the file as it is now ("file"), which the container keeps seeing: Docker binds the
    inode the source resolves to at start (docs.docker.com/engine/storage/bind-mounts), so a
    file replaced by rename afterwards stays invisible to the container."""
    binds = []
    for index, entry in enumerate(svc["raw"].get("volumes") or []):
        parts = entry.split(":") if isinstance(entry, str) else []
        if len(parts) < 2 or not parts[0].startswith("/"):
            continue
        bind = {"target": parts[1].rstrip("/") or "/", "source": parts[0], "file": None}
        if os.path.isfile(parts[0]):
            bind["file"] = _path("containers", "%s.bind%d" % (name, index))
            with contextlib.suppress(OSError):
                with open(parts[0], "rb") as src, open(bind["file"], "wb") as dst:
                    dst.write(src.read())
        binds.append(bind)
    return binds


def container_file(record, path):
    """The host file a container path reads through the container's bind mounts, or None."""
    for bind in sorted(record.get("binds") or [], key=lambda b: -len(b["target"])):
        if path == bind["target"]:
            return bind["file"] or (bind["source"] if os.path.isfile(bind["source"]) else None)
        if path.startswith(bind["target"] + "/") and not bind["file"]:
            found = os.path.join(bind["source"], path[len(bind["target"]) + 1:])
            return found if os.path.isfile(found) else None
    return None


NGINX_DEFAULT_CONF = "/etc/nginx/nginx.conf"


def is_nginx(record):
    return "nginx" in record["image"].split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def nginx_conf_path(argv):
    argv = list(argv if isinstance(argv, list) else str(argv).split())
    return argv[argv.index("-c") + 1] if "-c" in argv[:-1] else NGINX_DEFAULT_CONF


def nginx_load(record, conf):
    """sha256 of the configuration nginx reads at `conf` in the container; DockerError in
    nginx's words when it cannot. The image's own default config counts as present."""
    source = container_file(record, conf)
    if source is None:
        if conf == NGINX_DEFAULT_CONF:
            return "image-default"
        raise DockerError('nginx: [emerg] open() "%s" failed (2: No such file or directory)'
                          % conf)
    with open(source, "rb") as handle:
        data = handle.read()
    text = re.sub(r"#[^\n]*", "", data.decode("utf-8", "replace"))
    if not text.strip() or text.count("{") != text.count("}"):
        raise DockerError('nginx: [emerg] unexpected end of file, expecting "}" in %s' % conf)
    return hashlib.sha256(data).hexdigest()


def nginx_exec(record, args):
    """`nginx [-c FILE] -t [-q]` and `nginx [-c FILE] -s reload` in a running container."""
    conf = nginx_conf_path(args)
    signal_name = args[args.index("-s") + 1] if "-s" in args[:-1] else None
    if "-t" not in args and signal_name != "reload":
        sys.stderr.write("nginx: the sandbox's fake docker simulates only -t and -s reload\n")
        return 1
    try:
        loaded = nginx_load(record, conf)
    except DockerError as exc:
        sys.stderr.write("%s\n" % exc)
        if "-t" in args:
            sys.stderr.write("nginx: configuration file %s test failed\n" % conf)
        return 1
    if "-t" in args:
        if "-q" not in args:
            sys.stderr.write("nginx: the configuration file %s syntax is ok\n"
                             "nginx: configuration file %s test is successful\n" % (conf, conf))
        return 0
    with locked_state() as state:
        current = state["containers"].get(record["name"])
        if current:
            current["nginx_config"] = loaded
            current["reloads"] = int(current.get("reloads") or 0) + 1
    with contextlib.suppress(OSError), open(os.path.join(LOG_DIR, record["name"] + ".log"),
                                            "a", encoding="utf-8") as log:
        log.write("%s nginx: reloaded %s (sha256 %s)\n"
                  % (time.strftime("%Y-%m-%dT%H:%M:%S"), conf, loaded))
    return 0


def write_data_marks(svc):
    """What a real service does first: write into its data directories (Postgres' PG_VERSION,
    Cassandra's system keyspace...). Each writable bind mount under /var/lib/dialog gets a small
    file, so a data volume mounted there visibly holds the service's data, and data written to
    the root disk before a mount would be found under the mount point's shadow."""
    for entry in svc["raw"].get("volumes") or []:
        if not isinstance(entry, str):
            continue
        parts = entry.split(":")
        if len(parts) < 2 or not parts[0].startswith(DATA_ROOT) or \
                (len(parts) == 3 and "ro" in parts[2].split(",")):
            continue
        with contextlib.suppress(OSError):
            os.makedirs(parts[0], exist_ok=True)
            with open(os.path.join(parts[0], "sandbox-%s.data" % svc["name"]), "w") as handle:
                handle.write("written by %s (%s) at %s\n"
                             % (svc["name"], svc["image"], time.ctime()))


def remove_container(state, name):
    record = state["containers"].pop(name)
    for sig, seconds in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        if container_running(record):
            with contextlib.suppress(OSError):
                if record.get("real") and sig == signal.SIGKILL:
                    os.killpg(record["pid"], sig)  # the whole container, as Docker kills it
                else:
                    os.kill(record["pid"], sig)
        deadline = time.monotonic() + (seconds or float("inf"))
        while container_running(record) and time.monotonic() < deadline:
            time.sleep(0.02)
    for suffix in (".json", ".ready", ".sock", ".exit"):
        with contextlib.suppress(OSError):
            os.unlink(_path("containers", name + suffix))


# --------------------------------------------------------------------------------------------
# The fake container process.

def _log(message):
    sys.stdout.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), message))
    sys.stdout.flush()


def stun_response(data, addr):
    """A Binding Success Response to a STUN Binding Request, or None."""
    if len(data) < 20:
        return None
    msg_type, length, cookie = struct.unpack("!HHI", data[:8])
    if msg_type != 0x0001 or cookie != STUN_MAGIC or len(data) < 20 + length:
        return None
    ip_bytes, port = socket.inet_aton(addr[0]), addr[1]
    xaddr = bytes(a ^ b for a, b in zip(ip_bytes, struct.pack("!I", STUN_MAGIC)))
    attrs = struct.pack("!HHBBH", 0x0020, 8, 0, 1, port ^ (STUN_MAGIC >> 16)) + xaddr
    attrs += struct.pack("!HHBBH", 0x0001, 8, 0, 1, port) + ip_bytes
    software = b"fake-docker sandbox (STUN stand-in)"
    attrs += struct.pack("!HH", 0x8022, len(software)) + software + b"\0" * (-len(software) % 4)
    header = struct.pack("!HHI", 0x0101, len(attrs) + 8, STUN_MAGIC) + data[8:20]
    crc = (binascii.crc32(header + attrs) & 0xFFFFFFFF) ^ 0x5354554E
    return header + attrs + struct.pack("!HHI", 0x8028, 4, crc)


# Replacing a dead node, as Cassandra 4 does it ("Replacing a dead node", Apache Cassandra 4.1
# docs; StorageService.prepareForReplacement): a node started with
# -Dcassandra.replace_address_first_boot=<dead> first runs a gossip shadow round (it asks the
# seeds for the ring without announcing itself) and fails its start when no seed answers
# within the ring delay ("Unable to gossip with any peers"), when the address is not in gossip,
# or when the node there is alive ("Cannot replace a live node"). It then takes the dead node's
# host id and tokens, streams at UJ and turns UN; a different address leaves the ring then.
# The same address may be reused. A node whose data directory holds a completed bootstrap
# ignores the _first_boot flag and starts as itself; plain replace_address then fails. A seed
# never bootstraps, so it cannot replace (allow_unsafe_replace is not simulated).
UNSAFE_REPLACE = ("Replacing a node without bootstrapping risks invalidating consistency "
                  "guarantees as the expected data may not be present until repair is run. To "
                  "perform this operation, please restart with "
                  "-Dcassandra.allow_unsafe_replace=true")
GONE_STATES = ("left", "replaced")


class Ring:
    """One node's view of a fake Cassandra ring (see the module docstring)."""

    def __init__(self, settings):
        self.settings, self.lock, self.left = settings, threading.Lock(), False
        self.is_seed = settings["address"] in {host for host, _ in settings["seeds"]}
        normal, now = self.is_seed or settings["bootstrapped"], time.time()
        self.me = {key: settings[key] for key in ("address", "host_id", "dc", "rack", "tokens")}
        self.me.update(state="normal" if normal else "joining", heartbeat=now,
                       joined_at=now if normal else None)
        self.members = {settings["address"]: self.me}
        self.failed, self.replaces, self.started = None, None, now
        replace = settings.get("replace")
        saved_rack = settings.get("saved_rack")
        if saved_rack and saved_rack != settings["rack"]:
            # Cassandra's startup check (StartupChecks.checkRack): the saved rack is in the
            # node's system keyspace, on its data volume.
            self.failed = ("Cannot start node if snitch's rack(%s) differs from previous "
                           "rack(%s). Please fix the snitch configuration, decommission and "
                           "rebootstrap this node or use the flag -Dcassandra.ignore_rack=true."
                           % (settings["rack"], saved_rack))
        elif replace and settings["bootstrapped"]:
            if replace["first_boot"]:
                _log("cassandra: Replace address on first boot requested; this node is already "
                     "bootstrapped")
            else:
                self.failed = "Cannot replace address with a node that is already bootstrapped"
        elif replace and self.is_seed:
            self.failed = UNSAFE_REPLACE
        elif replace:
            self.replaces = replace["address"]
            self.me.update(state="hibernate", joined_at=None)
        if not self.failed:
            # Every start records the node's DC and rack in its system keyspace (the next start
            # is checked against them).
            data = read_json(settings["persisted"], {})
            data.update(dc=settings["dc"], rack=settings["rack"])
            write_json(settings["persisted"], data)

    def _fail(self, message):
        self.failed = message
        _log("cassandra: ERROR Exception encountered during startup: %s" % message)

    def _get(self, host, port, path):
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path),
                                    timeout=1.0) as response:
            return json.loads(response.read())

    def shadow_round(self):
        """Before announcing itself, a replacement reads the ring from a seed and checks the
        node it replaces; True once it streams, False while no seed answered yet."""
        for host, port in self.settings["seeds"]:
            if host == self.me["address"] or not self.settings["reachable"]:
                continue
            try:
                answer = self._get(host, port, "/_fake/ring")
            except (OSError, ValueError, urllib.error.URLError):
                continue
            if answer.get("cluster") != self.settings["cluster"]:
                continue
            members = answer.get("members") or []
            dead = next((m for m in members if m.get("address") == self.replaces and
                         m.get("state") not in GONE_STATES), None)
            if dead is None:
                self._fail("Cannot replace_address /%s because it doesn't exist in gossip"
                           % self.replaces)
                return False
            if time.time() - dead.get("heartbeat", 0) <= self.settings["down_seconds"]:
                self._fail("java.lang.UnsupportedOperationException: Cannot replace a live "
                           "node /%s. Endpoint still alive" % self.replaces)
                return False
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                schema = self._get(host, port, "/_fake/cql").get("keyspaces") or {}
                cql_route(self, "POST", json.dumps({"keyspaces": schema}))  # schema pull
            now = time.time()
            with self.lock:
                self.me.update(host_id=dead["host_id"], tokens=dead["tokens"],
                               state="joining", joined_at=now, heartbeat=now)
                for record in members:
                    if record.get("address") != self.me["address"]:
                        self.members[record["address"]] = record
            data = read_json(self.settings["persisted"], {})
            data.update(host_id=dead["host_id"], bootstrapped=False)
            write_json(self.settings["persisted"], data)
            _log("cassandra: %s replacing %s (host id %s): streaming its ranges (UJ)"
                 % (self.me["address"], self.replaces, dead["host_id"]))
            return True
        if time.time() - self.started > self.settings["ring_delay"]:
            self._fail("java.lang.RuntimeException: Unable to gossip with any peers")
        return False

    def _tick(self):  # call with the lock held
        me, now = self.me, time.time()
        if me["state"] == "joining" and me["joined_at"] is not None and \
                now >= me["joined_at"] + self.settings["join_seconds"]:
            me["state"] = "normal"
            _log("cassandra: %s joined the ring (UN)" % me["address"])
            old = self.members.get(self.replaces)
            if old is not None and self.replaces != me["address"]:
                # Gossip carries the replacement's takeover of the old address: every node
                # drops it from the ring (its tokens are this node's now).
                self.members[self.replaces] = dict(old, state="replaced", heartbeat=now)
                _log("cassandra: %s replaced %s, which left the ring"
                     % (me["address"], self.replaces))
            data = read_json(self.settings["persisted"], {})
            data.update(host_id=me["host_id"], bootstrapped=True)
            write_json(self.settings["persisted"], data)
        me["heartbeat"] = now

    def merge(self, members):
        with self.lock:
            for record in members:
                known = self.members.get(record.get("address"))
                if record.get("address") not in (None, "", self.me["address"]) and (
                        known is None or record.get("heartbeat", 0) > known.get("heartbeat", 0)):
                    self.members[record["address"]] = record
            self._tick()
            return list(self.members.values())

    def handle(self, method, body):
        """The /_fake/ring endpoint: POST merges the sender's members, both return ours."""
        cluster = self.settings["cluster"]
        if method != "POST":
            return 200, {"cluster": cluster, "members": self.merge([])}
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "bad JSON"}
        if data.get("cluster") != cluster:
            _log("cassandra: ClusterName mismatch: %r != %r" % (data.get("cluster"), cluster))
            return 409, {"error": "ClusterName mismatch", "cluster": cluster}
        return 200, {"cluster": cluster, "members": self.merge(data.get("members") or [])}

    def gossip_once(self):
        if self.me["state"] == "hibernate":
            return  # not announced until its shadow round has checked what it replaces
        reached = False
        for host, port in self.settings["seeds"]:
            if host == self.me["address"] or self.left or not self.settings["reachable"]:
                continue
            with self.lock:
                self._tick()
                payload = json.dumps({"cluster": self.settings["cluster"],
                                      "members": list(self.members.values())}).encode()
            request = urllib.request.Request(
                "http://%s:%d/_fake/ring" % (host, port), data=payload, method="POST",
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=1.0) as response:
                    answer = json.loads(response.read())
            except (OSError, ValueError, urllib.error.URLError):
                continue
            if answer.get("cluster") == self.settings["cluster"]:
                self.merge(answer.get("members") or [])
                reached = True
        with self.lock:
            if reached and self.me["joined_at"] is None and self.me["state"] == "joining":
                self.me["joined_at"] = time.time()
                _log("cassandra: %s reached a seed, bootstrapping" % self.me["address"])
            self._tick()

    def gossip_forever(self, stop):
        if not self.settings["reachable"]:
            _log("cassandra: storage port %d is not published: other nodes cannot reach this "
                 "node, it stays alone" % RING_PORT)
        if self.failed:
            self._fail(self.failed)
        while not self.failed and not stop.wait(GOSSIP_SECONDS):
            if self.me["state"] == "hibernate":
                self.shadow_round()
            else:
                self.gossip_once()
        if self.failed:
            stop.set()  # the JVM exits: the container stops

    def view(self):
        """The control socket's /_fake/ring: gossip once, then the members and their status."""
        self.gossip_once()
        with self.lock:
            rows = []
            for record in self.members.values():
                up = record is self.me or \
                    time.time() - record.get("heartbeat", 0) <= self.settings["down_seconds"]
                state = {"normal": "N", "joining": "J", "leaving": "L"}.get(record["state"], "N")
                if record.get("state") not in GONE_STATES + ("hibernate",):
                    rows.append(dict(record, status=("U" if up else "D") + state))
            return {"cluster": self.settings["cluster"], "rows": rows}

    def decommission(self):
        with self.lock:
            if self.me["state"] != "normal":
                return 1, "Unsupported operation: node is %s" % self.me["state"]
            self.me["state"] = "leaving"
            self._tick()
        _log("cassandra: %s decommissioning" % self.me["address"])
        self.gossip_once()
        time.sleep(self.settings["join_seconds"])
        with self.lock:
            self.me["state"] = "left"
            self._tick()
        self.gossip_once()
        self.left = True
        _log("cassandra: %s left the ring" % self.me["address"])
        return 0, ""


class _Handler(http.server.BaseHTTPRequestHandler):
    """An HTTP connection to a published TCP port or to the control socket."""
    protocol_version, timeout = "HTTP/1.1", 5.0

    def do_GET(self):  # pylint: disable=invalid-name
        ctx = self.server.ctx
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = route(ctx, self.command, self.path, body)
        if not ctx.get("control"):
            _log("%s %s %s from %s" % (self.command, self.path, status, self.client_address[0]))
        ctype = "text/plain; version=0.0.4" if isinstance(payload, bytes) else "application/json"
        if not isinstance(payload, bytes):
            payload = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        for header, value in (("Content-Type", ctype), ("Content-Length", len(payload)),
                              ("Connection", "close")):
            self.send_header(header, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_TRACE = do_GET
    do_CONNECT = do_GET

    def version_string(self):
        return "fake-docker-sandbox"

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


def route(ctx, method, path, body):
    """(status, payload): bytes are Prometheus text, anything else is sent as JSON."""
    spec, ring = ctx["spec"], ctx["ring"]
    base = path.split("?", 1)[0]
    if ring is not None and base == "/_fake/cql" and (ctx.get("control") or ctx["ring_port"]):
        return cql_route(ring, method, body)
    if ctx.get("control"):
        if ring is not None and base == "/_fake/ring":
            return 200, ring.view()
        if ring is not None and base == "/_fake/decommission":
            code, message = ring.decommission()
            return 200, {"exit": code, "message": message}
        return 404, {"error": "unknown control path"}
    if ring is not None and base == "/_fake/ring" and ctx["ring_port"]:
        return ring.handle(method, body)
    if base.endswith("/metrics"):
        return 200, ("# HELP fake_container_up A sandbox fake container is up.\n"
                     "# TYPE fake_container_up gauge\n"
                     'fake_container_up{container="%s",service="%s"} 1\n'
                     % (spec["name"], spec["service"])).encode()
    return 200, {"status": "ok", "fake": True, "container": spec["name"],
                 "service": spec["service"], "image": spec["image"], "path": path}


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads, allow_reuse_address, request_queue_size = True, True, 128


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _udp_loop(sock, handler=stun_response):
    while True:
        try:
            data, addr = sock.recvfrom(65536)
        except OSError:
            return
        answer = handler(data, addr)
        if answer:
            sock.sendto(answer, addr)


# Dialog's server keeps its Akka journal and snapshots in Cassandra through
# akka-persistence-cassandra, whose keyspace-autocreate makes the keyspaces "akka" and
# "akka_snapshot" with SimpleStrategy and replication-factor 1 (its reference.conf defaults)
# when the server first connects. The stand-in does the same, so the deploy finds them.
JOURNAL_KEYSPACES = ("akka", "akka_snapshot")
CONTACT_POINTS_RE = re.compile(r"contact-points\s*=\s*\[([^\]]*)\]")


def create_journal_keyspaces(spec, stop):
    conf = [v.split(":")[0] for v in spec.get("volumes") or []
            if isinstance(v, str) and v.split(":")[0].endswith("server.conf")]
    try:
        with open(conf[0], encoding="utf-8") as handle:
            found = CONTACT_POINTS_RE.search(handle.read())
    except (IndexError, OSError):
        return
    points = re.findall(r'"([^"]+)"', found.group(1)) if found else []
    simple = {"class": CQL_STRATEGIES["SimpleStrategy"], "replication_factor": "1"}
    while points and not stop.is_set():
        for point in points:
            url = "http://%s:%d/_fake/cql" % (point, RING_PORT)
            try:
                with urllib.request.urlopen(url, timeout=2.0) as answer:
                    known = json.loads(answer.read().decode() or "{}").get("keyspaces") or {}
                missing = {name: {"replication": dict(simple), "version": time.time()}
                           for name in JOURNAL_KEYSPACES if name not in known}
                if missing:
                    _cql_push([{"address": p} for p in points], {"keyspaces": missing})
                    _log("created keyspaces %s (SimpleStrategy, RF 1)" % ", ".join(missing))
                return
            except (OSError, ValueError, urllib.error.URLError):
                continue
        stop.wait(1.0)


def serve_container(spec_path):
    spec = read_json(spec_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _log("fake container %s (service %s, image %s): a sandbox stand-in, not the image"
         % (spec["name"], spec["service"], spec["image"]))
    ring = Ring(spec["cassandra"]) if spec["cassandra"] else None
    if "dialog-server" in spec["image"]:
        threading.Thread(target=create_journal_keyspaces, args=(spec, stop),
                         daemon=True).start()
    servers, udp_socks, bound = [], [], []
    where = spec["control"]
    try:
        for port in spec["ports"]:
            if not port["served"]:
                _log("not serving %s (validated only: a range of more than %d ports or sctp)"
                     % (ports_text([port]), MAX_SERVED_RANGE))
                continue
            address = (port["host_ip"] or "0.0.0.0", port["host_port"])
            where = "%s:%d" % address
            if port["protocol"] == "tcp":
                servers.append(_TCPServer(address, _Handler))
                servers[-1].ctx = {"spec": spec, "ring": ring,
                                   "ring_port": port["container_port"] == RING_PORT}
                actual = servers[-1].server_address[1]
            else:
                udp_socks.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                udp_socks[-1].bind(address)
                actual = udp_socks[-1].getsockname()[1]
            bound.append(dict(port, host_port=actual))
            _log("listening on %s:%d/%s (container port %d)"
                 % (address[0], actual, port["protocol"], port["container_port"]))
        where = spec["control"]
        with contextlib.suppress(OSError):
            os.unlink(spec["control"])
        servers.append(_UnixServer(spec["control"], _Handler))
        servers[-1].ctx = {"spec": spec, "ring": ring, "control": True}
    except OSError as exc:
        message = "Bind for %s failed: port is already allocated" % where \
            if exc.errno == errno.EADDRINUSE else "listen %s: %s" % (where, exc.strerror)
        _log(message)
        write_json(spec["ready"], {"error": message})
        return 1
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for sock in udp_socks:
        threading.Thread(target=_udp_loop, args=(sock, stun_response),
                         daemon=True).start()
    if ring is not None:
        threading.Thread(target=ring.gossip_forever, args=(stop,), daemon=True).start()
        _log("cassandra: node %s, seeds %s, cluster %r, %s" % (
            ring.me["address"], ",".join(h for h, _ in spec["cassandra"]["seeds"]),
            spec["cassandra"]["cluster"], "seed" if ring.is_seed else "joining"))
    write_json(spec["ready"], {"pid": os.getpid(), "ports": bound})
    while not stop.wait(1.0):
        pass
    _log("stopping")
    return 3 if ring is not None and ring.failed else 0  # CassandraDaemon's startup exit


def control_request(record, path, timeout=30.0):
    """GET path on a running container's control socket: the decoded JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(_path("containers", record["name"] + ".sock"))
        sock.sendall(("GET %s HTTP/1.1\r\nHost: local\r\n\r\n" % path).encode())
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    return json.loads(data.partition(b"\r\n\r\n")[2])


# --------------------------------------------------------------------------------------------
# Images, registries and `docker login`.
#
# Installed from the sandbox mirror's package (devtools/sandbox/mirror.py), this program finds
# fake_docker.json beside itself: {"mirror": "ADDRESS:PORT"}. Every registry host (docker.io,
# quay.io, the operator's) then resolves to that address, the sandbox's internet, and is
# contacted over plain HTTP (the package marks it an insecure registry, as daemon.json's
# insecure-registries would), with the image's registry host in the Host header. An image a
# service needs must be pulled first (`compose up` pulls missing ones itself, like compose);
# Dialog's images need `docker login`. Without that file (a host where the sandbox preinstalled
# this program), images are not simulated: every image counts as present, as before.

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_docker.json")
DOCKER_HUB = "docker.io"
# The key real Docker stores Docker Hub's credentials under in config.json.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
PULL_TIMEOUT = 300.0


def runtime_config():
    return read_json(CONFIG_FILE)


def parse_reference(image):
    """(registry, repository, tag or digest) the way Docker reads an image reference: a first
    path component with a '.' or ':' (or "localhost") is a registry host, else Docker Hub, whose
    single-name repositories live under library/."""
    name, _, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    return registry, path, digest or tag or "latest"


def docker_config_path():
    """Where `docker login` keeps credentials: $DOCKER_CONFIG, else ~/.docker (real Docker)."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _auth_key(registry):
    return DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry


def stored_auth(registry):
    entry = (read_json(docker_config_path(), {}) or {}).get("auths", {}).get(_auth_key(registry))
    return (entry or {}).get("auth")


def registry_request(registry, path, auth=None, method="GET", timeout=PULL_TIMEOUT):
    """(status, body) of an HTTP request to `registry` (through the mirror). DockerError with
    the daemon's words when it cannot be reached."""
    mirror = runtime_config()["mirror"]
    url = "http://%s%s" % (mirror, path)
    request = urllib.request.Request(url, method=method, headers={"Host": registry})
    if auth:
        request.add_header("Authorization", "Basic " + auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        words = getattr(reason, "strerror", None) or str(reason)
        raise DockerError('Error response from daemon: Get "http://%s/v2/": dial tcp %s: '
                          'connect: %s' % (registry, mirror, str(words).lower())) from None


def image_store():
    return read_json(_path("images.json"), {}) or {}


def image_present(image):
    return runtime_config() is None or image in image_store()


def pull_image(image):
    """Pull one image through the mirror; its digest. DockerError with Docker's messages."""
    if runtime_config() is None:
        return "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    registry, repository, reference = parse_reference(image)
    auth = stored_auth(registry)
    manifest = "/v2/%s/manifests/%s" % (repository, reference)
    status, body = registry_request(registry, manifest, auth)
    where = 'Head "http://%s%s"' % (registry, manifest)
    if status == 401 and not auth:
        raise DockerError("Error response from daemon: %s: no basic auth credentials" % where)
    if status == 401:
        raise DockerError("Error response from daemon: %s: unauthorized: authentication "
                          "required" % where)
    if status == 404:
        raise DockerError("Error response from daemon: manifest for %s not found: manifest "
                          "unknown: manifest unknown" % image)
    if status != 200:
        raise DockerError("Error response from daemon: %s: received unexpected HTTP status: %d"
                          % (where, status))
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with locked_state():  # the image store shares the state's lock
        images = image_store()
        images[image] = {"digest": digest, "pulled": time.time()}
        write_json(_path("images.json"), images)
    return digest


def cmd_pull(args):
    options, names = parse_args(args, flags=("-q", "--quiet"), positional=True)
    if len(names) != 1:
        raise DockerError('"docker pull" requires exactly 1 argument.')
    image = names[0]
    digest = pull_image(image)
    if not (options.get("-q") or options.get("--quiet")):
        print("%s: Pulling from %s" % (image.rsplit(":", 1)[-1] if ":" in image else "latest",
                                       parse_reference(image)[1]))
        print("Digest: %s\nStatus: Downloaded newer image for %s" % (digest, image))
    print(image)
    return 0


def cmd_image(args):
    if args[:1] != ["inspect"]:
        raise DockerError("the sandbox's fake docker simulates `docker image inspect` only")
    _, names = parse_args(args[1:], positional=True)
    if not names:
        raise DockerError('"docker image inspect" requires at least 1 argument.')
    store, found = image_store(), []
    for name in names:
        if not image_present(name):
            print("[]")
            raise DockerError("Error response from daemon: No such image: %s" % name)
        found.append({"Id": (store.get(name) or {}).get("digest", ""), "RepoTags": [name]})
    print(json.dumps(found, indent=4))
    return 0


def cmd_login(args):
    options, servers = parse_args(args, flags=("--password-stdin",),
                                  valued=("-u", "--username", "-p", "--password"),
                                  positional=True)
    if len(servers) > 1:
        raise DockerError('"docker login" requires at most 1 argument.')
    server = servers[0] if servers else DOCKER_HUB
    user = options.get("-u") or options.get("--username")
    password = options.get("-p") or options.get("--password")
    if options.get("--password-stdin"):
        if password:
            raise DockerError("--password and --password-stdin are mutually exclusive")
        if not user:
            raise DockerError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use "
                         "--password-stdin.\n")
    if not user or not password:
        raise DockerError("Error: Cannot perform an interactive login from a non TTY device")
    if runtime_config() is not None:
        auth = binascii.b2a_base64(("%s:%s" % (user, password)).encode(), newline=False)
        status, _ = registry_request(server, "/v2/", auth.decode(), timeout=30)
        if status != 200:
            raise DockerError("Error response from daemon: login attempt to http://%s/v2/ "
                              "failed with status: %d %s" % (
                                  server, status, "Unauthorized" if status == 401 else "Error"))
    path = docker_config_path()
    config = read_json(path, {}) or {}
    config.setdefault("auths", {})[_auth_key(server)] = {"auth": binascii.b2a_base64(
        ("%s:%s" % (user, password)).encode(), newline=False).decode()}
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent="\t")
    os.replace(path + ".tmp", path)
    sys.stderr.write("WARNING! Your password will be stored unencrypted in %s.\nConfigure a "
                     "credential helper to remove this warning. See\nhttps://docs.docker.com/"
                     "engine/reference/commandline/login/#credential-stores\n\n" % path)
    print("Login Succeeded")
    return 0


def pull_services(project, names, quiet=False):
    """Pull the images of the named services (compose prints a line per service); stops at the
    first failure, as compose does, with the daemon's error."""
    for service in names:
        image = project["services"][service]["image"]
        if not quiet:
            progress(service, "Pulling", kind="")
        try:
            pull_image(image)
        except DockerError as exc:
            progress(service, "Error %s" % str(exc).replace("Error response from daemon: ", ""),
                     kind="")
            raise
        if not quiet:
            progress(service, "Pulled", kind="")


# --------------------------------------------------------------------------------------------
# The CLI.

def parse_args(args, flags=(), valued=(), positional=False):
    """-> (options, arguments). flags take no value, valued options one (given once).
    positional: False (no arguments), True (anywhere) or "stop" (options end at the first)."""
    options, rest, args = {}, [], list(args)
    while args:
        arg = args.pop(0)
        if arg in valued and (not args or arg in options):
            raise DockerError("flag needs an argument: %s" % arg if not args else
                              "%s is given twice (the sandbox's fake docker takes one)" % arg)
        if arg in valued or arg in flags:
            options[arg] = args.pop(0) if arg in valued else True
        elif arg.startswith("-"):
            raise DockerError("unknown flag: %s" % arg)
        elif positional == "stop":
            return options, [arg] + args
        elif positional:
            rest.append(arg)
        else:
            raise DockerError("unexpected argument %r" % arg)
    return options, rest


def _json_format(options):
    if options.get("--format", "json") != "json":
        raise DockerError("the sandbox's fake docker renders --format json only")
    return "--format" in options


def ports_text(ports):
    out = []
    for port in ports:
        host, container = str(port["host_port"]), str(port["container_port"])
        if port.get("range", 1) > 1:
            host = "%s-%d" % (host, port["host_port"] + port["range"] - 1) \
                if port["host_port"] else host
            container = "%s-%d" % (container, port["container_port"] + port["range"] - 1)
        out.append("%s:%s->%s/%s" % (port["host_ip"] or "0.0.0.0", host, container,
                                     port["protocol"]))
    return ", ".join(out)


def container_row(record):
    running = container_running(record)
    code = 137
    if record.get("real") and not running:
        code = real_container.exit_status(record)
        code = 137 if code is None else code
    health = "healthy" if running and record.get("health") else ""
    command = record.get("command")
    return {
        "Command": '"%s"' % (" ".join(command) if isinstance(command, list) else command or ""),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(record["created"])),
        "ExitCode": 0 if running else code, "Health": health, "ID": record["id"][:12],
        "Image": record["image"], "Labels": "com.docker.compose.project=%s,"
        "com.docker.compose.service=%s" % (record["project"], record["service"]),
        "LocalVolumes": "0", "Mounts": "", "Name": record["name"], "Names": record["name"],
        "Networks": "%s_default" % record["project"], "Ports": ports_text(record["ports"]),
        "Project": record["project"], "Service": record["service"], "Size": "0B",
        "Publishers": [{"URL": p["host_ip"] or "0.0.0.0", "TargetPort": p["container_port"],
                        "PublishedPort": p["host_port"], "Protocol": p["protocol"]}
                       for p in record["ports"]],
        "State": "running" if running else "exited",
        "Status": ("Up (healthy)" if health else "Up") if running else "Exited (%d)" % code}


def cmd_version(args):
    client = {"Platform": {"Name": "Docker Engine - Community"}, "Version": DOCKER_VERSION,
              "ApiVersion": API_VERSION, "GoVersion": "go1.22.7", "GitCommit": "ce12230",
              "Os": "linux", "Arch": "amd64", "Context": "default"}
    server = {"Platform": {"Name": "Docker Engine - Community (sandbox stand-in)"},
              "Version": DOCKER_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
              "Os": "linux", "Arch": "amd64", "KernelVersion": os.uname().release}
    if _json_format(parse_args(args, valued=("--format",))[0]):
        print(json.dumps({"Client": client, "Server": server}))
        return 0
    print("Client: %s\n Version:           %s\n API version:       %s\n Go version:        %s\n"
          " Git commit:        %s\n OS/Arch:           linux/amd64\n Context:           default\n"
          "\nServer: %s\n Engine:\n  Version:          %s\n  API version:      %s (minimum "
          "version 1.24)\n  OS/Arch:          linux/amd64"
          % (client["Platform"]["Name"], DOCKER_VERSION, API_VERSION, client["GoVersion"],
             client["GitCommit"], server["Platform"]["Name"], DOCKER_VERSION, API_VERSION))
    return 0


def cmd_info(args):
    parse_args(args)
    records = list(read_state()["containers"].values())
    running = sum(1 for r in records if container_running(r))
    print("Client:\n Version:    %s\n Context:    default\n\nServer:\n Containers: %d\n"
          "  Running: %d\n  Stopped: %d\n Images: 0\n Server Version: %s\n Storage Driver: "
          "none (sandbox stand-in)\n Kernel Version: %s\n Operating System: sandbox fake "
          "docker\n Name: %s\n Docker Root Dir: %s"
          % (DOCKER_VERSION, len(records), running, len(records) - running, DOCKER_VERSION,
             os.uname().release, socket.gethostname(), STATE_DIR))
    return 0


def cmd_compose(args):
    opts, rest = parse_args(args, valued=("-f", "-p"), positional="stop")
    if not rest:
        print("Usage:  docker compose [-p NAME] -f FILE COMMAND")
        return 0
    if rest[0] not in COMPOSE_COMMANDS:
        raise DockerError("unknown docker command: \"compose %s\" (the sandbox's fake docker "
                          "simulates: %s)" % (rest[0], ", ".join(sorted(COMPOSE_COMMANDS))))
    return COMPOSE_COMMANDS[rest[0]](opts, rest[1:])


def compose_version(_opts, args):
    parse_args(args)
    print("Docker Compose version v%s" % COMPOSE_VERSION)
    return 0


def compose_config(opts, args):
    options, _ = parse_args(args, flags=("-q",))
    project = load_project(opts)
    if not options:
        out = {"name": project["name"],
               "services": {n: s["raw"] for n, s in project["services"].items()}}
        out.update((key, project[key]) for key in ("networks", "volumes") if project[key])
        sys.stdout.write(yaml.safe_dump(out, default_flow_style=False, sort_keys=True))
    return 0


def _project_records(project, state, orphans=False):
    return [r for r in state["containers"].values() if r["project"] == project["name"] and
            (r["service"] not in project["services"]) == orphans]


def _remove(state, record):
    progress(record["name"], "Stopping", "Stopped", "Removing")
    remove_container(state, record["name"])
    progress(record["name"], "Removed")


def _with_dependencies(project, names):
    """The named services and, as `docker compose up SERVICE` does, what they depend on."""
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += list(project["services"][name].get("depends_on") or ())
    return wanted


def compose_up(opts, args):
    # [SERVICE...] --no-deps --force-recreate: as docker compose up (docs.docker.com/reference/
    # cli/docker/compose/up): only the named services (and, without --no-deps, what they
    # depend on), recreated even when unchanged with --force-recreate.
    options, names = parse_args(args, flags=("-d", "--remove-orphans", "--no-deps",
                                             "--force-recreate"), positional=True)
    if not options.get("-d"):
        raise DockerError("the sandbox's fake docker runs only detached: use `up -d`")
    project = load_project(opts)
    unknown = [n for n in names if n not in project["services"]]
    if unknown:
        raise DockerError("no such service: %s" % unknown[0])
    selected = set(project["services"]) if not names else (
        set(names) if options.get("--no-deps") else _with_dependencies(project, names))
    # Compose's default pull_policy ("missing") pulls what is not here before creating anything.
    pull_services(project, [s for s, svc in project["services"].items()
                            if not image_present(svc["image"])])
    with locked_state() as state:
        orphans = _project_records(project, state, orphans=True)
        if orphans and options.get("--remove-orphans"):
            for record in orphans:
                _remove(state, record)
        elif orphans:
            warn("Found orphan containers (%s) for this project. If you removed or renamed this "
                 "service in your compose file, you can run this command with the "
                 "--remove-orphans flag to clean it up."
                 % ", ".join("[%s]" % r["name"] for r in orphans))
        net = "%s_default" % project["name"]
        if net not in state["networks"]:
            progress(net, "Creating", "Created", kind="Network")
            state["networks"][net] = {"created": time.time()}
        for service, svc in project["services"].items():
            if service not in selected:
                continue
            name, record = svc["name"], state["containers"].get(svc["name"])
            if record and record["project"] != project["name"]:
                raise DockerError('Error response from daemon: Conflict. The container name '
                                  '"/%s" is already in use by container "%s" (project %s).'
                                  % (name, record["id"], record["project"]))
            changed = bool(record) and (record.get("config_hash") != svc["config_hash"]
                                        or bool(options.get("--force-recreate")
                                                and (service in names or not names)))
            if record and not changed and container_running(record):
                progress(name, "Running")
                continue
            if changed:
                progress(name, "Recreate")
                remove_container(state, name)
                progress(name, "Recreated")
            elif not record:
                progress(name, "Creating", "Created")
            progress(name, "Starting")
            start_container(project, service, state)
            progress(name, "Started")
    return 0


def compose_pull(opts, args):
    options, names = parse_args(args, flags=("-q", "--quiet"), positional=True)
    project = load_project(opts)
    for name in names:
        if name not in project["services"]:
            raise DockerError("no such service: %s" % name)
    pull_services(project, names or list(project["services"]),
                  quiet=bool(options.get("-q") or options.get("--quiet")))
    return 0


def compose_down(opts, args):
    parse_args(args)
    project = load_project(opts)
    with locked_state() as state:
        for record in sorted(_project_records(project, state), key=lambda r: r["name"]):
            _remove(state, record)
        net = "%s_default" % project["name"]
        left = [r for r in state["containers"].values() if r["project"] == project["name"]]
        if net in state["networks"] and not left:
            progress(net, "Removing", kind="Network")
            del state["networks"][net]
            progress(net, "Removed", kind="Network")
    return 0


def compose_ps(opts, args):
    options, _ = parse_args(args, flags=("-a",), valued=("--format",))
    as_json = _json_format(options)
    records = [r for r in _project_records(load_project(opts), read_state())
               if options.get("-a") or container_running(r)]
    for row in [container_row(r) for r in sorted(records, key=lambda r: r["name"])]:
        print(json.dumps(row, sort_keys=True) if as_json else
              "%s  %s  %s  %s" % (row["Name"], row["Image"], row["Status"], row["Ports"]))
    return 0


def compose_logs(opts, args):
    _, names = parse_args(args, positional=True)
    project = load_project(opts)
    for name in names:
        if name not in project["services"]:
            raise DockerError("no such service: %s" % name)
    records = sorted((r for r in _project_records(project, read_state())
                      if not names or r["service"] in names), key=lambda r: r["name"])
    width = max([len(r["name"]) for r in records] + [0])
    for record in records:
        lines = []
        with contextlib.suppress(OSError), open(os.path.join(LOG_DIR, record["name"] + ".log"),
                                                encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
        for line in lines:
            if re.match(r"^\d{4}-\d\d-\d\dT", line):
                line = line.split(" ", 1)[1]
            print("%s  | %s" % (record["name"].ljust(width), line))
    return 0


def compose_exec(opts, args):
    options, rest = parse_args(args, flags=("-T",), valued=("-u", "--user", "-e", "--env"),
                               positional="stop")
    if len(rest) < 2:
        raise DockerError("'docker compose exec' requires at least 2 arguments")
    (service, program), args = rest[:2], rest[2:]
    project = load_project(opts)
    if service not in project["services"]:
        raise DockerError("no such service: %s" % service)
    record = read_state()["containers"].get(project["services"][service]["name"])
    if not record or not container_running(record):
        raise DockerError('service "%s" is not running' % service)
    if record.get("real"):
        env = dict(item.partition("=")[::2] for item in
                   (options.get("-e"), options.get("--env")) if item)
        argv = real_container.exec_argv(
            record, real_servers.for_image(record["image"]),
            options.get("-u") or options.get("--user"), env, [program] + args)
        return subprocess.call(argv)
    values = dict(zip(args, args[1:]))  # option -> the argument after it
    if os.path.basename(program) == "nginx" and is_nginx(record):
        return nginx_exec(record, args)
    if os.path.basename(program) == "pg_isready":
        if "-q" not in args:
            print("%s:%s - accepting connections" % (values.get("-h", "/var/run/postgresql"),
                                                     values.get("-p", "5432")))
        return 0
    if os.path.basename(program) == "nodetool" and args[:1] == ["repair"]:
        return nodetool_repair(record, args[1:])
    if os.path.basename(program) == "cqlsh":
        return cqlsh(record, args)
    if os.path.basename(program) == "nodetool":
        return nodetool(record, args[0] if args else "help")
    if program in ("cli", "/opt/docker/bin/cli"):
        return dialog_cli(project, args[0] if args else None, values.get("--login"))
    sys.stderr.write(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"%s\": "
        "not simulated by the sandbox's fake docker (it simulates nginx -t|-s reload, "
        "pg_isready, nodetool "
        "status|cleanup|decommission, /opt/docker/bin/cli create-user|admin-grant)\n" % program)
    return 127


def nodetool(record, command):
    if not read_json(_path("containers", record["name"] + ".json"), {}).get("cassandra"):
        sys.stderr.write("nodetool: Failed to connect to '127.0.0.1:7199' - ConnectException: "
                         "'Connection refused (Connection refused)'.\n")
        return 1
    if command == "cleanup":
        return 0
    if command == "decommission":
        answer = control_request(record, "/_fake/decommission", timeout=120)
        if answer["exit"]:
            sys.stderr.write("error: %s\n" % answer["message"])
        return answer["exit"]
    if command != "status":
        sys.stderr.write("nodetool: %s is not simulated by the sandbox's fake docker (status, "
                         "cleanup, decommission)\n" % command)
        return 1
    rows, out = control_request(record, "/_fake/ring")["rows"], []
    for dc_name in sorted({row["dc"] for row in rows}):
        members = sorted((r for r in rows if r["dc"] == dc_name), key=lambda r: [
            int(x) if x.isdigit() else x for x in re.split(r"(\d+)", r["address"])])  # numeric
        normal = [m for m in members if m["status"][1] == "N"] or members
        table = [("--", "Address", "Load", "Tokens", "Owns (effective)", "Host ID", "Rack")]
        for m in members:
            load = 64 + int(m["host_id"].replace("-", "")[:6], 16) % 9000 / 100.0
            owns = "%.1f%%" % (100.0 / len(normal)) if m["status"][1] == "N" else "?"
            table.append((m["status"], m["address"], "%.2f KiB" % load, str(m["tokens"]), owns,
                          m["host_id"], m["rack"]))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        out += ["Datacenter: %s" % dc_name, "=" * len("Datacenter: %s" % dc_name),
                "Status=Up/Down", "|/ State=Normal/Leaving/Joining/Moving"]
        out += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                for row in table] + [""]
    print("\n".join(out))
    return 0


def dialog_cli(project, action, login):
    if action not in ("create-user", "admin-grant"):
        sys.stderr.write("cli: the sandbox simulates create-user and admin-grant only\n")
        return 2
    if not login:
        sys.stderr.write("cli %s: a login is required (--login NAME)\n" % action)
        return 2
    with locked_state() as state:
        users = state["users"].setdefault(project["name"], {})
        if action == "create-user" and login in users:
            sys.stderr.write("Error: user %s already exists\n" % login)
            return 1
        if action == "create-user":
            users[login] = {"created": time.time(), "admin": False}
            print("User %s created" % login)
            return 0
        if login not in users:
            sys.stderr.write("Error: user %s not found\n" % login)
            return 1
        users[login]["admin"] = True
        print("Admin rights granted to %s" % login)
        return 0


# --------------------------------------------------------------------------------------------
# cqlsh -e and nodetool repair: keyspaces and their replication.
#
# Real Cassandra keeps the schema cluster-wide: a schema change made on one node is pushed to
# the others. Here each node's container holds the schema (persisted beside its ring state);
# a change is applied on the node cqlsh talks to and pushed to every ring member's storage
# port (/_fake/cql), newest version per keyspace wins. Behaviour copied from Cassandra 4.1:
# * ALTER KEYSPACE with NetworkTopologyStrategy naming a datacenter the ring does not have
#   fails ("Unrecognized strategy option {dc} passed to NetworkTopologyStrategy for keyspace
#   ks", CASSANDRA-16203, since 4.0);
# * a replication factor above the datacenter's node count is accepted, with a client warning
#   (cqlsh prints it); only reads/writes at QUORUM would then fail (not emulated: the pack
#   never writes);
# * `system` and `system_schema` cannot be altered ("... is not user-modifiable").
# `nodetool repair -full KS` fails when a replica of the keyspace is down, as a real repair
# does; each repair is recorded (cql state "repairs") so tests can see it ran.

CQL_SYSTEM = {
    "system": {"class": "org.apache.cassandra.locator.LocalStrategy"},
    "system_schema": {"class": "org.apache.cassandra.locator.LocalStrategy"},
    "system_auth": {"class": "org.apache.cassandra.locator.SimpleStrategy",
                    "replication_factor": "1"},
    "system_distributed": {"class": "org.apache.cassandra.locator.SimpleStrategy",
                           "replication_factor": "3"},
    "system_traces": {"class": "org.apache.cassandra.locator.SimpleStrategy",
                      "replication_factor": "2"},
}
CQL_UNMODIFIABLE = ("system", "system_schema")
CQL_STRATEGIES = {"SimpleStrategy": "org.apache.cassandra.locator.SimpleStrategy",
                  "NetworkTopologyStrategy":
                  "org.apache.cassandra.locator.NetworkTopologyStrategy"}
_CQL_LOCK = threading.Lock()


def _cql_file(ring):
    return ring.settings["persisted"][:-len(".json")] + "-schema.json"


def cql_route(ring, method, body):
    """/_fake/cql on the control socket or the storage port: GET the schema, POST merges one."""
    with _CQL_LOCK:
        state = read_json(_cql_file(ring), None) or {"keyspaces": {}, "repairs": []}
        if method == "POST":
            data = json.loads(body or b"{}")
            for name, entry in (data.get("keyspaces") or {}).items():
                known = state["keyspaces"].get(name)
                if known is None or entry["version"] > known["version"]:
                    state["keyspaces"][name] = entry
            state["repairs"] += data.get("repairs") or []
            write_json(_cql_file(ring), state)
        return 200, state


def _cql_request(record, method, payload=None):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(_path("containers", record["name"] + ".sock"))
        data = json.dumps(payload or {}).encode()
        sock.sendall(("%s /_fake/cql HTTP/1.1\r\nHost: local\r\nContent-Length: %d\r\n\r\n"
                      % (method, len(data))).encode() + data)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def _cql_push(rows, change):
    """Push a schema change to the ring's members (a node that is down misses it)."""
    for row in rows:
        request = urllib.request.Request("http://%s:%d/_fake/cql" % (row["address"], RING_PORT),
                                         data=json.dumps(change).encode(), method="POST")
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(request, timeout=2.0).close()


def _cql_replication(text):
    """{'class': ..., ...} from a CQL map literal, values as strings like system_schema."""
    pairs = re.findall(r"'([^']*)'\s*:\s*('[^']*'|\d+)", text)
    if not pairs:
        raise ValueError("SyntaxException: line 1: no replication map")
    result = {key: value.strip("'") for key, value in pairs}
    short = result.get("class", "")
    result["class"] = CQL_STRATEGIES.get(short, short)
    if result["class"] not in CQL_STRATEGIES.values():
        raise ValueError("ConfigurationException: Unable to find replication strategy class "
                         "'%s'" % short)
    return result


def _cql_all(state):
    keyspaces = {name: {"replication": dict(value)} for name, value in CQL_SYSTEM.items()}
    keyspaces.update(state["keyspaces"])
    return keyspaces


def cqlsh(record, args):
    statement = args[args.index("-e") + 1].strip().rstrip(";").strip() if "-e" in args else ""
    if not statement:
        sys.stderr.write("cqlsh: the sandbox's fake docker simulates `cqlsh [host] -e "
                         "STATEMENT` only\n")
        return 2
    if not read_json(_path("containers", record["name"] + ".json"), {}).get("cassandra"):
        sys.stderr.write("Connection error: ('Unable to connect to any servers', "
                         "{'127.0.0.1:9042': ConnectionRefusedError(111, 'Connection refused')})"
                         "\n")
        return 1
    state, rows = _cql_request(record, "GET"), control_request(record, "/_fake/ring")["rows"]
    keyspaces = _cql_all(state)
    words = statement.split()
    upper = [w.upper() for w in words]
    if upper[:2] == ["DESCRIBE", "KEYSPACES"] or upper[:2] == ["DESC", "KEYSPACES"]:
        print("\n" + "  ".join(sorted(keyspaces)) + "\n")
        return 0
    match = re.match(r"(?is)^SELECT\s+replication\s+FROM\s+system_schema\.keyspaces\s+WHERE\s+"
                     r"keyspace_name\s*=\s*'([^']+)'$", statement)
    if match:
        found = keyspaces.get(match.group(1))
        print("\n replication\n-------------")
        if found:
            print(" {%s}" % ", ".join("'%s': '%s'" % item
                                      for item in sorted(found["replication"].items())))
        print("\n(%d rows)" % (1 if found else 0))
        return 0
    match = re.match(r"(?is)^(ALTER|CREATE)\s+KEYSPACE\s+(IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?\s+"
                     r"WITH\s+replication\s*=\s*(\{.*\})(\s+AND\s+durable_writes\s*=\s*\w+)?$",
                     statement)
    if not match:
        sys.stderr.write("<stdin>:1:SyntaxException: the sandbox's cqlsh simulates DESCRIBE "
                         "KEYSPACES, SELECT replication FROM system_schema.keyspaces WHERE "
                         "keyspace_name = '...', CREATE and ALTER KEYSPACE\n")
        return 2
    verb, if_not_exists, name, replication = (match.group(1).upper(), match.group(2),
                                              match.group(3), match.group(4))
    try:
        wanted = _cql_replication(replication)
        if verb == "ALTER" and name not in keyspaces:
            raise ValueError("ConfigurationException: Cannot alter non existing keyspace '%s'."
                             % name)
        if verb == "ALTER" and name in CQL_UNMODIFIABLE:
            raise ValueError("Unauthorized: %s keyspace is not user-modifiable" % name)
        if verb == "CREATE" and name in keyspaces:
            if if_not_exists:
                return 0
            raise ValueError("AlreadyExists: Keyspace '%s' already exists" % name)
        dcs = {row["dc"] for row in rows}
        warnings = []
        for key, value in wanted.items():
            if key in ("class",):
                continue
            if wanted["class"].endswith("NetworkTopologyStrategy") and key not in dcs:
                raise ValueError("ConfigurationException: Unrecognized strategy option {%s} "
                                 "passed to NetworkTopologyStrategy for keyspace %s" % (key, name))
            members = [r for r in rows if key == "replication_factor" or r["dc"] == key]
            if int(value) > len(members):
                warnings.append("Your replication factor %s for keyspace %s is higher than the "
                                "number of nodes %d for datacenter %s"
                                % (value, name, len(members), key))
    except ValueError as exc:
        sys.stderr.write("<stdin>:1:%s\n" % exc)
        return 2
    if warnings:
        sys.stderr.write("\nWarnings :\n%s\n\n" % "\n".join(warnings))
    change = {"keyspaces": {name: {"replication": wanted, "version": time.time()}}}
    _cql_request(record, "POST", change)
    _cql_push(rows, change)     # this node too: an equal version changes nothing
    return 0


def nodetool_repair(record, args):
    """`nodetool repair [-full] KEYSPACE`: every replica must be up (UN)."""
    names = [a for a in args if not a.startswith("-")]
    state = _cql_request(record, "GET")
    keyspaces = _cql_all(state)
    for name in names:
        if name not in keyspaces:
            sys.stderr.write("error: Keyspace [%s] does not exist.\n" % name)
            return 1
    down = [r["address"] for r in control_request(record, "/_fake/ring")["rows"]
            if not r["status"].startswith("U")]
    if down:
        sys.stderr.write("error: Repair job has failed with the error message: Endpoint not "
                         "alive: /%s\n" % down[0])
        return 2
    done = [{"keyspace": name, "full": "-full" in args, "at": time.time()}
            for name in names or sorted(state["keyspaces"])]
    _cql_request(record, "POST", {"repairs": done})
    print("[%s] Repair completed successfully" % time.strftime("%Y-%m-%d %H:%M:%S"))
    return 0


COMPOSE_COMMANDS = {"version": compose_version, "config": compose_config, "up": compose_up,
                    "down": compose_down, "ps": compose_ps, "exec": compose_exec,
                    "logs": compose_logs, "pull": compose_pull}
COMMANDS = {"version": cmd_version, "info": cmd_info, "compose": cmd_compose, "pull": cmd_pull,
            "image": cmd_image, "login": cmd_login}


NO_SOCKET = ("permission denied while trying to connect to the Docker daemon socket at "
             "unix:///var/run/docker.sock: connect: permission denied")


def main(argv):
    if argv[:1] == ["_container"]:
        return serve_container(argv[1])
    if argv[:1] == ["_real_container"]:
        return real_container.supervise(argv[1], real_servers.for_image(
            read_json(argv[1])["image"]))
    try:
        if not argv:
            print("Usage:  docker COMMAND  (sandbox stand-in: %s)" % ", ".join(sorted(COMMANDS)))
            return 0
        if argv[0] not in COMMANDS:
            raise DockerError("docker: '%s' is not a docker command (the sandbox's fake docker "
                              "simulates: %s)." % (argv[0], ", ".join(sorted(COMMANDS))))
        if os.geteuid() != 0 and argv[0] != "version" and argv[:2] != ["compose", "version"]:
            # The daemon's socket is root's (0660 root:docker) and cloud images put the login
            # user in no docker group: without sudo the real CLI fails like this.
            raise DockerError(NO_SOCKET)
        return COMMANDS[argv[0]](argv[1:])
    except DockerError as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    except BrokenPipeError:  # `docker ... | head`: stop quietly, as the real CLI does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def package_files(python=None, config=None):
    """{file name: (bytes, mode)} of this program as a host's bin directory gets it: `docker`, a
    wrapper running `python` (default: this interpreter; it needs PyYAML) on fake_docker.py, a
    copy of this file, and with `config` fake_docker.json (see runtime_config())."""
    python = os.path.abspath(python or sys.executable)
    with open(os.path.abspath(__file__), "rb") as source:
        files = {"fake_docker.py": (source.read(), 0o644)}
    files["docker"] = (("#!/bin/sh\n# Sandbox stand-in for Docker (devtools/sandbox/"
                        "fake_docker.py).\nexec '%s' \"$(dirname \"$0\")/fake_docker.py\" "
                        "\"$@\"\n" % python.replace("'", "'\\''")).encode(), 0o755)
    files["real_servers.zip"] = (real_servers_zip(), 0o644)
    if config is not None:
        files[os.path.basename(CONFIG_FILE)] = (json.dumps(config, indent=1).encode(), 0o644)
    return files


def real_servers_zip():
    """The real_servers package as a zip beside fake_docker.py (the sandbox's apt stand-in
    installs flat files into /usr/local/bin only); Python imports packages from zips."""
    buffer = io.BytesIO()
    package = os.path.dirname(os.path.abspath(real_servers.__file__))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(os.listdir(package)):
            if entry.endswith((".py", ".sh")):
                info = zipfile.ZipInfo("real_servers/" + entry, (1980, 1, 1, 0, 0, 0))
                with open(os.path.join(package, entry), "rb") as source:
                    archive.writestr(info, source.read(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def install(bin_dir, python=None, config=None):
    """Install this program as bin_dir/docker (see package_files()); the wrapper's path."""
    os.makedirs(bin_dir, exist_ok=True)
    for name, (data, mode) in package_files(python, config).items():
        with open(os.path.join(bin_dir, name), "wb") as handle:
            handle.write(data)
        os.chmod(os.path.join(bin_dir, name), mode)
    return os.path.join(bin_dir, "docker")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
