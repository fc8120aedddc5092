"""lib.render against inventories shaped like the plans of every tier."""

import copy
import os
import re

import pytest
import yaml

from lib.catalog import default_catalog
from lib.errors import InputError
from lib.planner import build_plan
from lib.render import (COMPOSE_FILE, DEFAULT_IMAGES, ROLE_SERVICES, TEMPLATE_DIR,
                        cassandra_seeds, render_host, resolve_images)

CATALOG = default_catalog()
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = CATALOG.port

SECRETS = {
    "postgres_password": "pg-Secret-1a2b3c4d5e",
    "replication_password": "repl-Secret-6f7g8h9i",
    "turn_username": "turn-user-j0k1l2",
    "turn_password": "turn-Secret-m3n4o5p6",
    "server_secret": "server-Secret-q7r8s9t0",
    "server_key_public": "pubkey-u1v2w3x4y5z6",
    "server_key_private": "privkey-a7b8c9d0e1f2",
    "admin_login": "admin-login-g3h4",
    "admin_password": "admin-Secret-i5j6k7",
    "s3_access_key": "s3access-l8m9n0",
    "s3_secret_key": "s3-Secret-o1p2q3r4",
}
IMAGES = {"dialog_server": "registry.example.com/dialog/server:2.5",
          "web_app": "registry.example.com/dialog/web-app:2.5",
          "dashboard": "registry.example.com/dialog/dashboard:2.5",
          "push": "registry.example.com/dialog/push:2.5"}

# Every tier, and with_storage where the tier has it; then larger rings and clusters.
CASES = [
    ("mini", False, {}),
    ("small", False, {}),
    ("small", True, {}),
    ("small", False, {"cassandra_nodes": 3, "dialog_servers": 3}),
    ("small-failover", False, {}),
    ("small-failover", True, {"cassandra_nodes": 4, "dialog_servers": 5}),
    ("production", False, {}),
    ("production", True, {"storage_nodes": 1}),
]
IDS = ["%s%s%s" % (t, "+storage" if s else "", "+" + "+".join("%s=%s" % i for i in o.items())
                   if o else "") for t, s, o in CASES]


def inventory(plan):
    """Inventory hosts as a provider reports them: 10.80.0.x inside, 203.0.113.x outside."""
    hosts = []
    for number, host in enumerate(plan["hosts"], 1):
        hosts.append({
            "name": host["name"], "group": host["group"],
            "index": int(host["name"].rsplit("-", 1)[1]), "roles": list(host["roles"]),
            "private_address": "10.80.0.%d" % number,
            "public_addresses": ["203.0.113.%d" % (number * 3 + i)
                                 for i in range(host["public_ips"])],
        })
    by_name = {h["name"]: h for h in hosts}
    for number, floating in enumerate(plan["floating_ips"], 1):
        # The active member of the group holds the floating address.
        by_name[floating["hosts"][0]]["public_addresses"].append("198.51.100.%d" % number)
    return hosts


def make_context(tier, with_storage=False, **counts):
    plan = build_plan(tier, "aws", with_storage=with_storage, **counts)
    return {"deployment": "dialog", "tier": tier, "provider": "aws",
            "with_storage": with_storage, "hosts": inventory(plan),
            "secrets": dict(SECRETS), "images": dict(IMAGES)}


def render_all(context):
    return {h["name"]: render_host(context, h["name"]) for h in context["hosts"]}


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def deployment(request):
    tier, with_storage, counts = request.param
    context = make_context(tier, with_storage, **counts)
    return context, render_all(context)


def with_role(context, role):
    return sorted((h for h in context["hosts"] if role in h["roles"]), key=lambda h: h["index"])


def file_of(result, path):
    matches = [f for f in result["files"] if f["path"] == path]
    assert len(matches) == 1, path
    return matches[0]["content"]


def compose(result):
    return yaml.safe_load(file_of(result, COMPOSE_FILE))


def strip_quoted_and_comments(text, comment_chars):
    """The text without quoted strings and comments, for counting braces."""
    out, quote, index = [], None, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif any(text.startswith(c, index) for c in comment_chars):
            index = text.find("\n", index)
            if index < 0:
                break
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


def assert_balanced(text):
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unclosed {"


# ---------------------------------------------------------------------------------------------
# Shape of the result, and compose files.

def test_result_shape(deployment):
    context, results = deployment
    for host in context["hosts"]:
        result = results[host["name"]]
        assert result["host"] == host["name"]
        assert result["address"] == host["private_address"]
        assert result["project"] == "dialog"
        assert sorted(result["roles"]) == sorted(host["roles"])
        assert result["compose_file"] == COMPOSE_FILE
        paths = [f["path"] for f in result["files"]]
        assert paths[0] == COMPOSE_FILE
        assert len(paths) == len(set(paths))
        for item in result["files"]:
            assert item["path"].startswith(("/opt/dialog/", "/etc/dialog/")), item["path"]
            assert item["mode"] == (0o600 if item["secret"] else 0o644), item["path"]
            assert isinstance(item["content"], str) and item["content"].endswith("\n")


def test_compose_files_parse_and_every_service_has_an_image(deployment):
    context, results = deployment
    for host in context["hosts"]:
        result = results[host["name"]]
        document = compose(result)
        assert document["name"] == "dialog"
        assert list(document["services"]) == result["services"]
        for name, service in document["services"].items():
            assert isinstance(service.get("image"), str) and service["image"], name
            assert service["restart"] == "unless-stopped"
        mounted = {v.split(":")[0] for s in document["services"].values()
                   for v in s.get("volumes", []) if v.startswith("/etc/dialog/")}
        env_files = {p for s in document["services"].values() for p in s.get("env_file", [])}
        rendered = {f["path"] for f in result["files"]}
        # Every file a service reads is rendered (the TLS pair and directories excepted).
        for path in env_files | {p for p in mounted if "." in os.path.basename(p)}:
            assert path in rendered, path


def test_each_roles_services_run_exactly_on_the_hosts_with_the_role(deployment):
    context, results = deployment
    for role, services in ROLE_SERVICES.items():
        carriers = {h["name"] for h in context["hosts"] if role == "*" or role in h["roles"]}
        for service in services:
            running = {name for name, result in results.items()
                       if service in result["services"]}
            assert running == carriers, (role, service)


def test_ports_come_from_the_catalog(deployment):
    context, results = deployment
    for host in context["hosts"]:
        services = compose(results[host["name"]])["services"]
        if "dialog-server" in host["roles"]:
            ports = services["dialog-server"]["ports"]
            for purpose in ("http", "websocket", "mobile", "cluster"):
                number = PORT("dialog-server", purpose)
                assert "%d:%d" % (number, number) in ports
        if "cassandra" in host["roles"]:
            gossip = PORT("cassandra", "gossip")
            assert "%d:%d" % (gossip, gossip) in services["cassandra"]["ports"]
        if "voice" in host["roles"]:
            turn = PORT("voice", "turn")
            assert {"%d:%d" % (turn, turn), "%d:%d/udp" % (turn, turn)} <= \
                set(services["coturn"]["ports"])


# ---------------------------------------------------------------------------------------------
# server.conf

def test_server_conf_points_at_the_deployment(deployment):
    context, results = deployment
    dialog = with_role(context, "dialog-server")
    primary = with_role(context, "postgres")[0]
    for host in dialog:
        conf = file_of(results[host["name"]], "/etc/dialog/server.conf")
        assert_balanced(strip_quoted_and_comments(conf, ("#", "//")))
        assert 'host = "%s"' % primary["private_address"] in conf
        assert "port = %d" % PORT("postgres", "pgbouncer") in conf
        assert 'db = "dialog"' in conf and 'user = "dialog"' in conf
        points = re.findall(r"contact-points = \[(.*)\]", conf)
        assert len(points) == 3  # the driver, the journal and the snapshot store
        for line in points:
            assert [a.strip().strip('"') for a in line.split(",")] == \
                [h["private_address"] for h in with_role(context, "cassandra")]
        push = with_role(context, "push")[0]
        assert re.search(r'push \{[^}]*host = "%s"\s+port = %d' % (
            re.escape(push["private_address"]), PORT("push", "grpc")), conf)
        urls = re.findall(r'url = "turn:([^:"]+):(\d+)"', conf)
        voice = with_role(context, "voice")
        assert urls == [((h["public_addresses"] or [h["private_address"]])[0],
                         str(PORT("voice", "turn"))) for h in voice]
        assert conf.count('username = "%s"' % SECRETS["turn_username"]) == len(voice)
        seeds = re.findall(r'"akka://dialog@([\d.]+):(\d+)"', conf)
        if len(dialog) > 1:
            assert seeds == [(h["private_address"], str(PORT("dialog-server", "cluster")))
                             for h in dialog[:3]]
            assert 'hostname = "%s"' % host["private_address"] in conf
            assert "single-mode" not in conf
        else:
            assert seeds == [] and "seed-nodes" not in conf
            assert "single-mode = true" in conf


def test_server_conf_files_adapter(deployment):
    context, results = deployment
    for host in with_role(context, "dialog-server"):
        conf = file_of(results[host["name"]], "/etc/dialog/server.conf")
        volumes = compose(results[host["name"]])["services"]["dialog-server"]["volumes"]
        if context["with_storage"]:
            gateway = with_role(context, "s3-gateway")[0]
            assert "S3StorageAdapter" in conf and "LocalFileStorageAdapter" not in conf
            assert 'endpoint = "http://%s:%d"' % (gateway["private_address"],
                                                  PORT("s3-gateway", "rgw")) in conf
            assert "path-style-access = true" in conf
            assert 'default-bucket = "dialog"' in conf
            assert SECRETS["s3_access_key"] in conf and SECRETS["s3_secret_key"] in conf
            assert not any(v.startswith("/var/lib/dialog/files") for v in volumes)
        else:
            assert "LocalFileStorageAdapter" in conf and "S3StorageAdapter" not in conf
            assert "/var/lib/dialog/files:/storage/files" in volumes


# ---------------------------------------------------------------------------------------------
# Cassandra, Postgres, coturn, Prometheus, nginx

def test_cassandra_seeds_never_list_a_joining_node(deployment):
    context, results = deployment
    ring = with_role(context, "cassandra")
    expected = [h["private_address"] for h in ring[:2]]
    assert cassandra_seeds(context["hosts"]) == expected
    for host in ring:
        env = compose(results[host["name"]])["services"]["cassandra"]["environment"]
        seeds = env["CASSANDRA_SEEDS"].split(",")
        assert seeds == expected
        if host["index"] > 2:
            assert host["private_address"] not in seeds
        assert env["CASSANDRA_CLUSTER_NAME"] == "dialog-dialog"
        assert env["CASSANDRA_LISTEN_ADDRESS"] == host["private_address"]
        assert env["CASSANDRA_BROADCAST_ADDRESS"] == host["private_address"]
        assert env["CASSANDRA_ENDPOINT_SNITCH"]


def test_cassandra_seeds_sort_by_index():
    hosts = [{"name": "c-%d" % i, "index": i, "roles": ["cassandra"],
              "private_address": "10.0.0.%d" % i} for i in (4, 2, 3, 1)]
    assert cassandra_seeds(hosts) == ["10.0.0.1", "10.0.0.2"]
    assert cassandra_seeds(hosts[:1]) == ["10.0.0.4"]
    assert cassandra_seeds([]) == []


def test_postgres_primary_and_standby(deployment):
    context, results = deployment
    postgres = with_role(context, "postgres")
    primary = postgres[0]
    for host in postgres:
        result = results[host["name"]]
        services = compose(result)["services"]
        assert services["postgres"]["env_file"] == ["/etc/dialog/postgres.env"]
        assert "/var/lib/dialog/postgres:/var/lib/postgresql/data" in \
            services["postgres"]["volumes"]
        assert services["pgbouncer"]["environment"]["LISTEN_PORT"] == \
            str(PORT("postgres", "pgbouncer"))
        env = file_of(result, "/etc/dialog/postgres.env")
        assert "POSTGRES_PASSWORD='%s'" % SECRETS["postgres_password"] in env
        if len(postgres) == 1:
            assert "command" not in services["postgres"]
        else:
            # Both run server.sh (tests/test_postgres_failover.py checks what it does).
            script = file_of(result, "/etc/dialog/postgres/server.sh")
            assert "PRIMARY_ADDRESS=%s" % primary["private_address"] in script
            assert "--write-recovery-conf" in script
            assert services["postgres"]["command"] == ["bash", "/etc/dialog/postgres/server.sh"]
            assert "REPLICATION_PASSWORD='%s'" % SECRETS["replication_password"] in env
    if len(postgres) > 1:
        file_of(results[primary["name"]], "/etc/dialog/postgres/init-replication.sh")
        hba = file_of(results[primary["name"]], "/etc/dialog/postgres/pg_hba.conf")
        for standby in postgres[1:]:
            assert "host    replication  replicator   %s/32" % standby["private_address"] in hba
    else:
        paths = [f["path"] for f in results[primary["name"]]["files"]]
        assert "/etc/dialog/postgres/init-replication.sh" not in paths


def test_turnserver_conf(deployment):
    context, results = deployment
    for host in with_role(context, "voice"):
        conf = file_of(results[host["name"]], "/etc/dialog/turnserver.conf")
        lines = conf.splitlines()
        assert "listening-port=%d" % PORT("voice", "turn") in lines
        assert "min-port=%d" % PORT("voice", "relay_min") in lines
        assert "max-port=%d" % PORT("voice", "relay_max") in lines
        public = (host["public_addresses"] or [host["private_address"]])[0]
        assert any(line.split("/")[0] == "external-ip=" + public for line in lines)
        assert "realm=dialog-dialog" in lines
        assert "user=%s:%s" % (SECRETS["turn_username"], SECRETS["turn_password"]) in lines
        for flag in ("lt-cred-mech", "fingerprint", "no-cli"):
            assert flag in lines


def test_prometheus_scrapes_every_host_once_per_role(deployment):
    context, results = deployment
    target = "%s:%d"
    for host in with_role(context, "web"):
        config = yaml.safe_load(file_of(results[host["name"]], "/etc/dialog/prometheus.yml"))
        (job,) = config["scrape_configs"]
        groups = {g["labels"]["role"]: g["targets"] for g in job["static_configs"]}
        present = {role for h in context["hosts"] for role in h["roles"]}
        assert set(groups) == present
        for other in context["hosts"]:
            address = target % (other["private_address"], PORT("*", "node_exporter"))
            for role in other["roles"]:
                assert address in groups[role], (other["name"], role)
            assert sum(address in targets for targets in groups.values()) == \
                len(other["roles"])
            names = [r["replacement"] for r in job["relabel_configs"]
                     if re.fullmatch(r["regex"], address)]
            assert names == [other["name"]]


def test_nginx_upstreams_list_every_web_and_dialog_host(deployment):
    context, results = deployment
    for host in with_role(context, "proxy"):
        conf = file_of(results[host["name"]], "/etc/dialog/nginx/nginx.conf")
        assert_balanced(strip_quoted_and_comments(conf, ("#",)))

        def upstream(name, text=conf):
            block = re.search(r"upstream %s \{(.*?)\}" % name, text, re.S)
            return re.findall(r"server (\S+);", block.group(1))

        def expected(role, purpose):
            return ["%s:%d" % (h["private_address"], PORT(role, purpose))
                    for h in with_role(context, role)]

        assert upstream("dialog_http") == expected("dialog-server", "http")
        assert upstream("dialog_websocket") == expected("dialog-server", "websocket")
        assert upstream("dialog_mobile") == expected("dialog-server", "mobile")
        if "web" in host["roles"]:
            assert upstream("dialog_web") == ["web-app:%d" % PORT("web", "http")]
        else:
            assert upstream("dialog_web") == expected("web", "http")
        assert "listen %d default_server;" % PORT("proxy", "http") in conf
        assert "listen %d;" % PORT("proxy", "https") in conf
        assert "ssl_preread on;" in conf
        assert "/etc/dialog/tls/cert.pem" in conf and "/etc/dialog/tls/key.pem" in conf
        for location in ("location / ", "location /v1 ", "location /api "):
            assert location in conf
        ports = compose(results[host["name"]])["services"]["nginx"]["ports"]
        push_private = all(not h["public_addresses"] for h in with_role(context, "push"))
        for purpose in ("grpc", "http"):
            number = PORT("push", purpose)
            passed = "listen %d;" % number in conf
            assert passed == (context["tier"] == "small-failover")
            assert passed == ("%d:%d" % (number, number) in ports)
            if passed:
                assert push_private
                assert upstream("push_" + purpose) == expected("push", purpose)


def test_dashboard_points_at_a_dialog_server(deployment):
    context, results = deployment
    first = with_role(context, "dialog-server")[0]
    for host in with_role(context, "web"):
        env = compose(results[host["name"]])["services"]["dashboard"]["environment"]
        url = "http://%s:%d" % (first["private_address"], PORT("dialog-server", "http"))
        assert env["ENDPOINT"] == url


def test_ceph_on_storage_and_gateway(deployment):
    context, results = deployment
    storage = with_role(context, "storage")
    for host in storage + with_role(context, "s3-gateway"):
        conf = file_of(results[host["name"]], "/etc/dialog/ceph/ceph.conf")
        for member in storage:
            assert "v1:%s:%d" % (member["private_address"], PORT("storage", "monitor")) in conf
    if not context["with_storage"]:
        assert storage == [] and with_role(context, "s3-gateway") == []


# ---------------------------------------------------------------------------------------------
# Health checks

def test_checks_per_role(deployment):
    context, results = deployment
    kinds = {"http", "tcp", "stun", "exec", "cassandra"}
    for host in context["hosts"]:
        result = results[host["name"]]
        checks = result["checks"]
        for check in checks:
            assert check["kind"] in kinds
            assert check["address"] == host["private_address"]
            assert isinstance(check["port"], int)
            assert check["service"] in result["services"]
            assert check["role"] == "*" or check["role"] in host["roles"]
            if check["kind"] == "http":
                assert check["path"].startswith("/")
            if check["kind"] in ("exec", "cassandra"):
                assert check["command"]
        by_name = {c["name"]: c for c in checks}
        assert len(by_name) == len(checks)
        for role in host["roles"] + ["*"]:
            assert any(c["role"] == role for c in checks), role
        if "dialog-server" in host["roles"]:
            check = by_name["dialog-server http"]
            assert (check["kind"], check["port"], check["path"]) == \
                ("http", PORT("dialog-server", "http"), "/v1/status")
        if "postgres" in host["roles"]:
            assert by_name["postgres ready"]["command"][0] == "pg_isready"
            assert by_name["pgbouncer tcp"]["port"] == PORT("postgres", "pgbouncer")
        if "cassandra" in host["roles"]:
            assert by_name["cassandra ring"]["kind"] == "cassandra"
            assert by_name["cassandra ring"]["command"] == ["nodetool", "status"]
        if "voice" in host["roles"]:
            assert (by_name["coturn stun"]["kind"], by_name["coturn stun"]["port"]) == \
                ("stun", PORT("voice", "turn"))
        if "push" in host["roles"]:
            assert by_name["push http"]["path"] == "/health"
            assert by_name["push http"]["port"] == PORT("push", "http")
        if "web" in host["roles"]:
            web_app = by_name["web-app http"]
            if "proxy" in host["roles"]:
                # Through nginx's http port, which hands this path to the web-app.
                assert web_app["port"] == PORT("proxy", "http")
                conf = file_of(result, "/etc/dialog/nginx/nginx.conf")
                assert "location = %s {" % web_app["path"] in conf
            else:
                assert (web_app["port"], web_app["path"]) == (PORT("web", "http"), "/")
            assert by_name["prometheus http"]["path"] == "/-/ready"
            assert by_name["dashboard http"]["port"] == PORT("web", "dashboard")
        assert by_name["node-exporter http"]["path"] == "/metrics"


# ---------------------------------------------------------------------------------------------
# Secrets, images, determinism

def test_no_secret_in_a_non_secret_file(deployment):
    context, results = deployment
    for result in results.values():
        for item in result["files"]:
            if item["secret"]:
                continue
            for name, value in SECRETS.items():
                assert value not in item["content"], (result["host"], item["path"], name)


def test_secret_files_are_the_ones_holding_secrets(deployment):
    _, results = deployment
    for result in results.values():
        for item in result["files"]:
            if item["secret"]:
                assert any(v in item["content"] for v in SECRETS.values()), item["path"]


@pytest.mark.parametrize("role,key", [("dialog-server", "dialog_server"), ("web", "web_app"),
                                      ("web", "dashboard"), ("push", "push")])
def test_a_missing_dialog_image_fails_naming_the_key(role, key):
    context = make_context("small")
    del context["images"][key]
    host = with_role(context, role)[0]
    with pytest.raises(InputError) as caught:
        render_host(context, host["name"])
    assert caught.value.field == "images"
    assert "images.%s is not set" % key in str(caught.value)
    # Hosts that do not run it still render.
    render_host(context, with_role(context, "cassandra")[0]["name"])


def test_mini_names_every_missing_dialog_image():
    context = make_context("mini")
    context["images"] = {}
    with pytest.raises(InputError) as caught:
        render_host(context, context["hosts"][0]["name"])
    for key in ("dialog_server", "web_app", "dashboard", "push"):
        assert "images.%s" % key in str(caught.value)


def test_resolve_images():
    resolved = resolve_images({"postgres": "mirror.example.com/postgres:16", "push": "p:1"})
    assert resolved["postgres"] == "mirror.example.com/postgres:16"
    assert resolved["push"] == "p:1"
    assert resolved["cassandra"] == DEFAULT_IMAGES["cassandra"]
    assert "dialog_server" not in resolve_images(None)
    for image in DEFAULT_IMAGES.values():
        assert ":" in image.rsplit("/", 1)[-1], "pin a tag: %s" % image
    with pytest.raises(InputError) as caught:
        resolve_images({"dialog-server": "x:1"})
    assert caught.value.field == "images" and "dialog-server" in str(caught.value)


def test_missing_secret_is_named_not_shown():
    context = make_context("small")
    del context["secrets"]["turn_password"]
    with pytest.raises(InputError) as caught:
        render_host(context, with_role(context, "voice")[0]["name"])
    assert caught.value.field == "secrets" and "turn_password" in str(caught.value)


def test_unknown_host():
    context = make_context("small")
    with pytest.raises(InputError) as caught:
        render_host(context, "dialog-nope-1")
    assert caught.value.field == "host"


@pytest.mark.parametrize("tier,with_storage", [("mini", False), ("small-failover", True)])
def test_same_context_renders_identical_bytes(tier, with_storage):
    context = make_context(tier, with_storage)
    first = render_all(context)
    again = render_all(copy.deepcopy(context))
    assert first == again
    # The inventory's order does not matter either: hosts are sorted by index.
    shuffled = copy.deepcopy(context)
    shuffled["hosts"].reverse()
    assert render_all(shuffled) == first


def test_a_config_change_changes_only_its_services_hash():
    context = make_context("small")
    name = with_role(context, "dialog-server")[0]["name"]
    before = compose(render_host(context, name))["services"]
    context["secrets"]["server_secret"] = "another-Secret-z9y8x7"
    after = compose(render_host(context, name))["services"]
    assert before["dialog-server"]["labels"] != after["dialog-server"]["labels"]
    assert before["node-exporter"] == after["node-exporter"]


def test_templates_and_renderer_write_no_port_number():
    numbers = {p for ports in CATALOG.doc["services"].values() for p in ports.values()}
    pattern = re.compile(r"(?<![\w.])(%s)(?![\w.])" % "|".join(str(n) for n in sorted(numbers)))
    paths = [os.path.join(TEMPLATE_DIR, f) for f in sorted(os.listdir(TEMPLATE_DIR))]
    paths.append(os.path.join(PACK_ROOT, "actions", "lib", "render.py"))
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                assert not pattern.search(line), "%s:%d: %s" % (path, number, line.strip())


def test_growing_the_dialog_servers_keeps_the_running_servers_config():
    """3 -> 5: the two new servers join through the existing seed list and the first three
    servers' files stay byte for byte the same, so a scale-out restarts none of them."""
    small = make_context("small-failover", dialog_servers=3)
    before = render_all(small)
    grown = make_context("small-failover", dialog_servers=5)
    # Hosts keep their addresses when others are added: the provider does not renumber them.
    kept = {h["name"]: h for h in small["hosts"]}
    for number, host in enumerate(grown["hosts"]):
        if host["name"] in kept:
            host.update(private_address=kept[host["name"]]["private_address"],
                        public_addresses=kept[host["name"]]["public_addresses"])
        else:
            host.update(private_address="10.80.1.%d" % number, public_addresses=[])
    joining = ["dialog-dialog-server-4", "dialog-dialog-server-5"]
    during = {name: render_host(dict(grown, joining=joining), name) for name in joining}
    after = render_all(grown)
    for name in ("dialog-dialog-server-%d" % n for n in (1, 2, 3)):
        assert after[name]["files"] == before[name]["files"], name
    seeds = [h["private_address"] for h in with_role(grown, "dialog-server")[:3]]
    for name in joining:
        conf = file_of(during[name], "/etc/dialog/server.conf")
        assert re.findall(r'"akka://dialog@([\d.]+):', conf) == seeds
        assert during[name]["address"] not in seeds
    # The proxies route to all five once the deploy reconciles them.
    proxy = file_of(after["dialog-proxy-1"], "/etc/dialog/nginx/nginx.conf")
    for server in with_role(grown, "dialog-server"):
        assert server["private_address"] + ":" in proxy


@pytest.mark.parametrize("tier", ["mini", "small", "production"])
def test_static_servers_publish_internal_ports_on_the_private_address_only(tier):
    """A static server has no cloud firewall in front: every port the tier does not expose to
    the internet is published on the private address, never on 0.0.0.0."""
    context = dict(make_context(tier), provider="static")
    catalog = default_catalog()
    external = [(rule["role"], rule["protocol"], text)
                for server in catalog.tier(tier)["servers"] for rule in server["ports"]
                if rule["exposure"] == "external" for text in rule["ports"]]
    seen_private = seen_public = 0
    for host in context["hosts"]:
        services = compose(render_host(context, host["name"]))["services"]
        for service in services.values():
            for entry in service.get("ports") or []:
                number = int(entry.split("/")[0].rsplit(":", 1)[1].split("-")[0])
                protocol = "udp" if entry.endswith("/udp") else "tcp"
                public = any(p == protocol and int(t.split("-")[0]) <= number <=
                             int(t.split("-")[-1]) and r in host["roles"]
                             for r, p, t in external)
                if public:
                    seen_public += 1
                    assert entry.count(":") == 1, entry
                else:
                    seen_private += 1
                    assert entry.startswith(host["private_address"] + ":"), entry
    assert seen_private and seen_public


def test_cloud_servers_publish_on_every_address_behind_the_providers_firewall():
    context = make_context("small")
    for host in context["hosts"]:
        services = compose(render_host(context, host["name"]))["services"]
        for service in services.values():
            assert all(entry.count(":") == 1 for entry in service.get("ports") or [])
