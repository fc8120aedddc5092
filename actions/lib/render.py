"""What each host runs, as files: its docker-compose file and the configuration its services read.

render_host(context, name) turns the deployment (inventory hosts, secrets, images) into the files
one host needs. It is pure: the same context renders the same bytes, so the bootstrap can upload
only what changed. Every port comes from the catalog's `services` block; the templates in
templates/ say how each component is configured and why.

Secrets appear only in files marked secret (mode 0600): env files that compose reads, and the
configuration files that must hold a credential themselves (server.conf, turnserver.conf).
"""

import hashlib
import json
import os
import re
import uuid

import jinja2

from lib.catalog import default_catalog, parse_port_range
from lib.deployment_record import postgres_primary
from lib.cluster.cassandra_replace import replace_address
from lib.cloud.zones import cassandra_rack
from lib.errors import InputError
from lib.hosts.turn_peers import peer_rules
from lib.hosts.volumes import rendered_volumes
from lib.stages import by_index, cassandra_seed_hosts, hosts_with

PROJECT = "dialog"
DIALOG_SEED_COUNT = 3
COMPOSE_FILE = "/opt/dialog/docker-compose.yml"
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

# Public images that exist on their registries, pinned so that a re-deploy does not silently
# upgrade a database. A profile's `images` may override any of them.
DEFAULT_IMAGES = {
    "postgres": "postgres:16",
    "pgbouncer": "edoburu/pgbouncer:v1.25.1-p0",
    "cassandra": "cassandra:4.1",
    "coturn": "coturn/coturn:4.6.2",
    "nginx": "nginx:1.26",
    "prometheus": "prom/prometheus:v2.53.0",
    "node_exporter": "prom/node-exporter:v1.8.2",
    "ceph": "quay.io/ceph/ceph:v18.2.4",
}
# Dialog's own images were served from registries that no longer exist: no default is honest.
DIALOG_IMAGES = ("dialog_server", "web_app", "dashboard", "push")
ROLE_IMAGES = {"dialog-server": ("dialog_server",), "web": ("web_app", "dashboard"),
               "push": ("push",)}

# Compose services per role, in the order they appear in a compose file; "*" is every host.
ROLE_SERVICES = {
    "proxy": ["nginx"],
    "web": ["web-app", "dashboard", "prometheus"],
    "voice": ["coturn"],
    "push": ["push"],
    "dialog-server": ["dialog-server"],
    "postgres": ["postgres", "pgbouncer"],
    "cassandra": ["cassandra"],
    "s3-gateway": ["rgw"],
    "storage": ["ceph-mon", "ceph-mgr", "ceph-osd"],
    "*": ["node-exporter"],
}

# The image key (DEFAULT_IMAGES, DIALOG_IMAGES) each compose service runs: what a host pulls.
SERVICE_IMAGES = {"nginx": "nginx", "web-app": "web_app", "dashboard": "dashboard",
                  "prometheus": "prometheus", "coturn": "coturn", "push": "push",
                  "dialog-server": "dialog_server", "postgres": "postgres",
                  "pgbouncer": "pgbouncer", "cassandra": "cassandra", "rgw": "ceph",
                  "ceph-mon": "ceph", "ceph-mgr": "ceph", "ceph-osd": "ceph",
                  "node-exporter": "node_exporter"}

# Secrets a role's files need. The dialog servers need S3_SECRETS too with self-hosted storage,
# a Postgres pair needs replication_password.
S3_SECRETS = ("s3_access_key", "s3_secret_key")
ROLE_SECRETS = {
    "dialog-server": ("postgres_password", "turn_username", "turn_password", "server_secret",
                      "server_key_public", "server_key_private"),
    "postgres": ("postgres_password",),
    "voice": ("turn_username", "turn_password"),
    "s3-gateway": S3_SECRETS,
}
# Where nginx forwards a health check to a web-app that has no port of its own (mini).
WEB_APP_HEALTH_PATH = "/healthz/web-app"

# Roles whose hosts a role's configuration points at.
ROLE_NEEDS = {
    "proxy": ("web", "dialog-server"),
    "web": ("dialog-server",),
    "dialog-server": ("postgres", "cassandra", "voice", "push"),
    "s3-gateway": ("storage",),
}

# Config files: (path on the host, template, mode, holds a secret).
SERVER_CONF = ("/etc/dialog/server.conf", "server.conf.j2", 0o600, True)
POSTGRES_ENV = ("/etc/dialog/postgres.env", "postgres.env.j2", 0o600, True)
PGBOUNCER_ENV = ("/etc/dialog/pgbouncer.env", "pgbouncer.env.j2", 0o600, True)
PG_INIT = ("/etc/dialog/postgres/init-replication.sh", "postgres-init-replication.sh.j2",
           0o644, False)
# A primary/standby pair: every Postgres host runs server.sh (postgres-server.sh.j2) with the
# rendered pg_hba.conf; both sit in /etc/dialog/postgres, mounted as a directory, so a restart
# reads what the last deploy or dialog.postgres_repoint put there.
PG_SERVER = ("/etc/dialog/postgres/server.sh", "postgres-server.sh.j2", 0o644, False)
PG_HBA = ("/etc/dialog/postgres/pg_hba.conf", "postgres-hba.conf.j2", 0o644, False)
TURN_CONF = ("/etc/dialog/turnserver.conf", "turnserver.conf.j2", 0o600, True)
PUSH_CONF = ("/etc/dialog/push.yaml", "push.yaml.j2", 0o644, False)
PROMETHEUS_CONF = ("/etc/dialog/prometheus.yml", "prometheus.yml.j2", 0o644, False)
# In a directory of its own, mounted as a directory: the upload replaces the file by rename,
# and a single-file bind mount would keep showing the container the old inode, so a reload
# would read the old file (docs.docker.com/engine/storage/bind-mounts: a bind mount is of the
# inode the source resolves to when the container starts).
NGINX_DIR = "/etc/dialog/nginx"
NGINX_CONF = (NGINX_DIR + "/nginx.conf", "nginx.conf.j2", 0o644, False)
# Files a running service re-reads on a command, so that a change restarts nothing:
# {service: (config path, test argv, reload argv)}. nginx -s reload: the master checks the new
# configuration, starts new workers and lets the old ones finish their connections
# (nginx.org/en/docs/control.html). The path is the same inside the container.
RELOADABLE = {"nginx": (NGINX_CONF[0], ["nginx", "-t", "-q", "-c", NGINX_CONF[0]],
                        ["nginx", "-s", "reload", "-c", NGINX_CONF[0]])}
CEPH_CONF = ("/etc/dialog/ceph/ceph.conf", "ceph.conf.j2", 0o644, False)
S3_ENV = ("/etc/dialog/s3.env", "s3.env.j2", 0o600, True)


def replication_slot(host_name):
    """The physical replication slot (and application_name) of the standby on `host_name`:
    slot names allow only lower-case letters, digits and underscores, 63 bytes at most
    (postgresql.org/docs/15/warm-standby.html#STREAMING-REPLICATION-SLOTS)."""
    return ("standby_" + re.sub(r"[^a-z0-9_]", "_", host_name.lower()))[:63]


def postgres_pair(context):
    """(primary host, [standby hosts]) of the deployment: the record's postgres_primary
    (context["postgres_primary"]) when it names a postgres host, else the first by index."""
    postgres = hosts_with(context["hosts"], "postgres")
    name = postgres_primary({"postgres_primary": context.get("postgres_primary")},
                            context["hosts"])
    primary = next((h for h in postgres if h["name"] == name), None)
    return primary, [h for h in postgres if h is not primary]


def _quote(value):
    """A double-quoted string that YAML and HOCON both read back as the same text."""
    return json.dumps(str(value))


def _env_value(value):
    """A value for a compose env file: single quotes keep $, # and spaces literal."""
    if "'" in value or "\n" in value:
        raise ValueError("contains a single quote or a newline")
    return "'%s'" % value


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                          undefined=jinja2.StrictUndefined, autoescape=False,
                          keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["q"] = _quote
_ENV.filters["regex_escape"] = re.escape


def resolve_images(images):
    """The profile's images over the public defaults. Unknown keys are refused (a typo would
    otherwise be ignored); Dialog's own images stay unset unless the profile names them."""
    images = dict(images or {})
    known = sorted(set(DEFAULT_IMAGES) | set(DIALOG_IMAGES))
    unknown = sorted(set(images) - set(known))
    if unknown:
        raise InputError("images", "unknown image key %s" % ", ".join(unknown), known)
    resolved = dict(DEFAULT_IMAGES)
    resolved.update({key: value for key, value in images.items() if value})
    return resolved


def cassandra_seeds(hosts):
    """Seed addresses (see stages.cassandra_seed_hosts: the same hosts bootstrap first)."""
    return [h["private_address"] for h in cassandra_seed_hosts(hosts)]


def dialog_seeds(hosts, joining=None):
    """The Akka seed nodes: the first three dialog servers by index, leaving out servers that are
    joining right now (a scale-out bootstraps them with the seed list the cluster already has,
    and updates the lists once they are healthy). A fixed set keeps the other servers' config,
    and so their processes, untouched when the cluster grows beyond three."""
    joining = set(joining or ())
    servers = [h for h in hosts_with(hosts, "dialog-server") if h["name"] not in joining]
    return servers[:DIALOG_SEED_COUNT]


def public_address(host):
    """The address clients on the internet reach a host at (its private one if it has none)."""
    return (host.get("public_addresses") or [host["private_address"]])[0]


def proxied_push_purposes(catalog, tier):
    """Push ports the seed opens on the proxies (small-failover: the push host is private)."""
    for server in catalog.tier(tier)["servers"]:
        if "proxy" in server["roles"]:
            opened = {text for rule in server["ports"] if rule["role"] == "proxy"
                      for text in rule["ports"]}
            return [p for p in ("grpc", "http") if str(catalog.port("push", p)) in opened]
    return []


def _check_inputs(context, host, images):
    roles = set(host["roles"])
    missing = [key for role in sorted(roles & set(ROLE_IMAGES)) for key in ROLE_IMAGES[role]
               if not images.get(key)]
    if missing:
        names = ["images.%s" % key for key in sorted(missing)]
        raise InputError("images", "%s %s not set: Dialog's images are not on any public "
                         "registry, so %s needs them from yours; name them in the profile's "
                         "images (%s)" % (" and ".join(names), "is" if len(names) == 1 else "are",
                                          host["name"], ", ".join(names)))
    present = {role for h in context["hosts"] for role in h["roles"]}
    lacking = sorted({other for role in roles for other in ROLE_NEEDS.get(role, ())
                      if other not in present})
    if "dialog-server" in roles and context.get("with_storage") and "s3-gateway" not in present:
        lacking.append("s3-gateway")
    storage = context.get("object_storage")
    if "dialog-server" in roles and storage and not context.get("with_storage"):
        absent = [k for k in ("endpoint", "bucket", "access_key_id", "secret_access_key")
                  if not storage.get(k)]
        if absent:
            raise InputError("object_storage", "%s keeps uploaded files in bucket %s, and the "
                             "profile gives no %s for it" % (host["name"], storage.get("bucket"),
                                                             " or ".join(absent)))
    if lacking:
        raise InputError("hosts", "%s needs hosts with the role %s, and the inventory has none"
                         % (host["name"], ", ".join(lacking)))
    needed = {name for role in roles for name in ROLE_SECRETS.get(role, ())}
    if "dialog-server" in roles and context.get("with_storage"):
        needed.update(S3_SECRETS)
    postgres = hosts_with(context["hosts"], "postgres")
    if "postgres" in roles and len(postgres) > 1:
        needed.add("replication_password")
    secrets = context.get("secrets") or {}
    absent = sorted(n for n in needed if not secrets.get(n))
    if absent:
        raise InputError("secrets", "%s needs %s" % (host["name"], ", ".join(absent)))


def publish_address(context, host, catalog):
    """bind(role, purpose, protocol) -> the "address:" a compose port is published on.

    Static servers publish the tier's internal ports on the host's private address only: no
    security group or cloud firewall stands in front of them, and Docker's published ports
    bypass most host firewalls. The nftables table the static driver applies (lib.hosts.
    host_firewall) filters them too; this keeps them off public interfaces if that table is
    ever flushed. On the clouds every port is published on all addresses and the provider's
    firewall decides, as before."""
    if context.get("provider") != "static":
        return lambda role, purpose, protocol="tcp": ""
    external = []
    for server in catalog.tier(context["tier"])["servers"]:
        for rule in server["ports"]:
            if rule["exposure"] == "external":
                external += [(rule["role"], rule["protocol"]) + parse_port_range(text)
                             for text in rule["ports"]]
    address = host["private_address"]
    prefix = "[%s]:" % address if ":" in address else "%s:" % address

    def bind(role, purpose, protocol="tcp"):
        port = catalog.port(role, purpose)
        public = any(r == role and p == protocol and low <= port <= high
                     for r, p, low, high in external)
        return "" if public else prefix
    return bind


def _model(context, host, images, catalog):
    """Everything the templates need, computed once (addresses sorted by index)."""
    hosts = context["hosts"]
    deployment = context["deployment"]
    postgres = hosts_with(hosts, "postgres")
    primary, standbys = postgres_pair(context)
    dialog = hosts_with(hosts, "dialog-server")
    roles = [r for r in catalog.role_names if r in host["roles"]]
    return {
        "deployment": deployment, "tier": context["tier"], "project": PROJECT,
        "with_storage": bool(context.get("with_storage")),
        # The bucket of uploaded files (lib.cloud.object_storage), None where files stay local.
        "object_storage": None if context.get("with_storage") else context.get("object_storage"),
        "host": host, "address": host["private_address"], "roles": roles,
        "public_address": public_address(host),
        "provider": context.get("provider"),    # turnserver.conf's address mapping
        "turn_peers": peer_rules(by_index(hosts)),   # turnserver.conf's peer filter
        "hosts": by_index(hosts), "images": images, "secrets": context.get("secrets") or {},
        "cluster_name": "%s-%s" % (PROJECT, deployment),
        "postgres_primary": primary,
        "postgres_standbys": standbys,
        "postgres_hosts": postgres,
        "is_postgres_primary": primary is not None and primary["name"] == host["name"],
        "slot": replication_slot,
        "cassandra": hosts_with(hosts, "cassandra"),
        "cassandra_seeds": cassandra_seeds(hosts),
        "dialog": dialog,
        "dialog_seeds": dialog_seeds(hosts, context.get("joining")),
        "joining": list(context.get("joining") or ()),
        # dialog.deploy's `replacing`: the dead node's address this Cassandra host replaces.
        "replace_address": replace_address(context.get("replacing"), host, hosts),
        # GossipingPropertyFileSnitch's rack: the host's AWS zone, else rack1 (lib.cloud.zones).
        "cassandra_rack": cassandra_rack(host),
        "voice": hosts_with(hosts, "voice"),
        "push": hosts_with(hosts, "push"),
        "web": hosts_with(hosts, "web"),
        "s3_gateways": hosts_with(hosts, "s3-gateway"),
        "storage": hosts_with(hosts, "storage"),
        # One OSD per storage host, created in the hosts' order: osd.0 on the first.
        "osd_id": [h["name"] for h in hosts_with(hosts, "storage")].index(host["name"])
        if "storage" in host["roles"] else None,
        "proxied_push": proxied_push_purposes(catalog, context["tier"]),
        # Ceph needs a cluster id; derived from the deployment name so renders are repeatable.
        "ceph_fsid": str(uuid.uuid5(uuid.NAMESPACE_URL, "stackstorm-dialog:" + deployment)),
        "role_groups": [(role, hosts_with(hosts, role)) for role in catalog.role_names
                        if hosts_with(hosts, role)],
        "port": catalog.port,
        "bind": publish_address(context, host, catalog),
        "web_app_health_path": WEB_APP_HEALTH_PATH,
        "env": _env_value,
    }


def _file(spec, model):
    path, template, mode, secret = spec
    return {"path": path, "content": _ENV.get_template(template).render(model), "mode": mode,
            "secret": secret}


def _config_files(model):
    """{service: [file, ...]}: the files each compose service of this host reads."""
    roles, files = model["roles"], {}
    if "proxy" in roles:
        files["nginx"] = [_file(NGINX_CONF, model)]
    if "web" in roles:
        files["prometheus"] = [_file(PROMETHEUS_CONF, model)]
    if "voice" in roles:
        files["coturn"] = [_file(TURN_CONF, model)]
    if "push" in roles:
        files["push"] = [_file(PUSH_CONF, model)]
    if "dialog-server" in roles:
        files["dialog-server"] = [_file(SERVER_CONF, model)]
    if "postgres" in roles:
        files["postgres"] = [_file(POSTGRES_ENV, model)]
        if len(model["postgres_hosts"]) > 1:
            files["postgres"] += [_file(PG_SERVER, model), _file(PG_HBA, model)]
            if model["is_postgres_primary"]:
                files["postgres"].append(_file(PG_INIT, model))
        files["pgbouncer"] = [_file(PGBOUNCER_ENV, model)]
    if "storage" in roles or "s3-gateway" in roles:
        ceph = _file(CEPH_CONF, model)
        for service in ("ceph-mon", "ceph-mgr", "ceph-osd") if "storage" in roles else ():
            files[service] = [ceph]
        if "s3-gateway" in roles:
            files["rgw"] = [ceph, _file(S3_ENV, model)]
    return files


def _digest(files):
    text = "".join("%s\n%s\n" % (f["path"], f["content"]) for f in files)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checks(model, catalog):
    """Health checks, per role, against the host's private address."""
    port, address, roles = catalog.port, model["address"], model["roles"]
    checks = []

    def add(name, role, service, kind, port_, path=None, command=None):
        checks.append({"name": name, "role": role, "service": service, "kind": kind,
                       "address": address, "port": port_, "path": path, "command": command})

    if "proxy" in roles:
        add("nginx http", "proxy", "nginx", "http", port("proxy", "http"), "/")
    if "web" in roles:
        if "proxy" in roles:
            # web-app shares the host with nginx and has no port of its own: nginx passes this
            # path on its http port to the web-app's "/" (see nginx.conf).
            add("web-app http", "web", "web-app", "http", port("proxy", "http"),
                WEB_APP_HEALTH_PATH)
        else:
            add("web-app http", "web", "web-app", "http", port("web", "http"), "/")
        add("dashboard http", "web", "dashboard", "http", port("web", "dashboard"), "/")
        add("prometheus http", "web", "prometheus", "http", port("web", "prometheus"),
            "/-/ready")
    if "voice" in roles:
        add("coturn stun", "voice", "coturn", "stun", port("voice", "turn"))
    if "push" in roles:
        add("push http", "push", "push", "http", port("push", "http"), "/health")
    if "dialog-server" in roles:
        add("dialog-server http", "dialog-server", "dialog-server", "http",
            port("dialog-server", "http"), "/v1/status")
    if "postgres" in roles:
        add("postgres ready", "postgres", "postgres", "exec", port("postgres", "postgres"),
            command=["pg_isready", "--username=dialog", "--dbname=dialog"])
        add("pgbouncer tcp", "postgres", "pgbouncer", "tcp", port("postgres", "pgbouncer"))
    if "cassandra" in roles:
        # Healthy when this node's line in `nodetool status` reads UN (up, normal). A node
        # dialog.scale is joining passes its start at UJ (up, joining: streaming, which may
        # take hours); dialog.cassandra_join then waits for UN with progress.
        add("cassandra ring", "cassandra", "cassandra", "cassandra", port("cassandra", "cql"),
            command=["nodetool", "status"])
        # A replacement streams the dead node's ranges at UJ as a joining node does.
        joining = model["host"]["name"] in (model.get("joining") or ()) or \
            bool(model.get("replace_address"))
        checks[-1]["states"] = ["UN", "UJ"] if joining else ["UN"]
    if "s3-gateway" in roles:
        add("rgw http", "s3-gateway", "rgw", "http", port("s3-gateway", "rgw"), "/")
    if "storage" in roles:
        add("ceph-mon tcp", "storage", "ceph-mon", "tcp", port("storage", "monitor"))
    add("node-exporter http", "*", "node-exporter", "http", port("*", "node_exporter"),
        "/metrics")
    return checks


def render_host(context, name, catalog=None):
    """The files, compose services and health checks of one host of the deployment."""
    catalog = catalog or default_catalog()
    by_name = {h["name"]: h for h in context["hosts"]}
    if name not in by_name:
        raise InputError("host", "no host named %r in the inventory" % (name,), sorted(by_name))
    host = by_name[name]
    images = resolve_images(context.get("images"))
    _check_inputs(context, host, images)
    model = _model(context, host, images, catalog)
    try:
        per_service = _config_files(model)
    except ValueError as exc:
        # Only _env_value raises here; say which kind of value, never the value itself.
        raise InputError("secrets", "a secret for %s %s; env files cannot hold it"
                         % (name, exc)) from None
    services = [s for role in model["roles"] + ["*"] for s in ROLE_SERVICES[role]]
    # A reloadable service's label leaves out what a reload picks up: changing only that file
    # leaves the compose file as it was, and compose recreates nothing.
    model["config_hash"] = {s: _digest(files) for s, files in per_service.items()
                            if s not in RELOADABLE}
    model["nginx_dir"], model["nginx_conf"] = NGINX_DIR, NGINX_CONF[0]
    model["services"] = services
    compose = {"path": COMPOSE_FILE, "content": _ENV.get_template("docker-compose.yml.j2")
               .render(model), "mode": 0o644, "secret": False}
    others = {f["path"]: f for files in per_service.values() for f in files}
    return {
        "host": name,
        "address": host["private_address"],
        "roles": model["roles"],
        "project": PROJECT,
        "compose_file": COMPOSE_FILE,
        "files": [compose] + [others[path] for path in sorted(others)],
        "services": services,
        "checks": _checks(model, catalog),
        # lib.bootstrap reloads these services instead of recreating them when only these
        # files changed.
        "reload": {s: {"paths": [RELOADABLE[s][0]], "test": RELOADABLE[s][1],
                       "reload": RELOADABLE[s][2]} for s in per_service if s in RELOADABLE},
        # What the host pulls before anything starts, and where it installs Docker from
        # (lib.hosts.registry, lib.hosts.docker_install); registry credentials never come here.
        "images": sorted({images[SERVICE_IMAGES[s]] for s in services}),
        "docker_apt_repository": context.get("docker_apt_repository"),
        # Data volumes to format and mount before any service starts.
        "volumes": rendered_volumes(host),
    }
