"""The files the pack renders, read by the real servers: Debian's nginx, coturn and Prometheus
node exporter, the same binaries the sandbox runs in place of their images
(devtools/sandbox/real_servers). Each runs in a throwaway mount and network namespace with the
rendered file at its container path (tests/real_server_check.py).

Skipped, with the reason, where a binary is missing or namespaces cannot be made; CI installs
the packages (devtools/install_real_servers.sh) and runs as root, so they run there.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from lib.render import COMPOSE_FILE, render_host
from test_render import make_context

pytestmark = pytest.mark.xdist_group("netns")

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "real_server_check.py")
BINARIES = {"nginx": "/usr/sbin/nginx", "coturn": "/usr/bin/turnserver",
            "node-exporter": "/usr/bin/prometheus-node-exporter"}
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

PRIVATE_PEERS = ["10.0.0.5", "172.16.0.1", "172.17.0.2", "192.168.1.1", "100.64.0.1",
                 "127.0.0.1", "169.254.169.254", "0.0.0.0", "0.1.2.3", "224.0.0.1",
                 "240.0.0.1", "192.0.0.8", "198.18.0.1"]
PUBLIC_PEERS = ["8.8.8.8", "1.1.1.1", "52.95.110.1"]


def need(service):
    binary = BINARIES[service]
    if not os.path.exists(binary):
        pytest.skip("%s is not installed (devtools/install_real_servers.sh installs it)"
                    % binary)
    if service == "nginx" and not os.path.exists(STREAM_MODULE):
        pytest.skip("%s is not installed (libnginx-mod-stream)" % STREAM_MODULE)
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a throwaway mount and network namespace")


def rendered(context, name):
    files = {f["path"]: f["content"] for f in render_host(context, name)["files"]}
    return files, yaml.safe_load(files[COMPOSE_FILE])


def run_check(tmp_path, spec, *args, timeout=60):
    """real_server_check.py in a new mount and network namespace: (status, stdout, stderr)."""
    spec = dict({"name": "dialog-%s-1" % spec["service"], "environment": {},
                 "project_dir": str(tmp_path), "log": str(tmp_path / "log"),
                 "exit_file": str(tmp_path / "exit"), "etc_dir": str(tmp_path / "etc")}, **spec)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "--",
                           sys.executable, CHECK, str(path)] + list(args),
                          capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def bind_sources(tmp_path, service, files):
    """The service's compose binds with every source under tmp_path, holding the rendered
    files the host would have there: [(source, container path, read only)]."""
    mounts = []
    for entry in service.get("volumes") or []:
        source, target = entry.split(":")[:2]
        local = tmp_path / "host" / source.strip("/")
        if source in files:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(files[source])
        else:
            local.mkdir(parents=True, exist_ok=True)
            for path, content in files.items():
                if path.startswith(source + "/"):
                    (local / os.path.relpath(path, source)).write_text(content)
        mounts.append((str(local), target, ":ro" in entry))
    return mounts


def self_signed(directory):
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=dialog.test", "-keyout", str(directory / "key.pem"),
                    "-out", str(directory / "cert.pem")], check=True, capture_output=True)


# ---------------------------------------------------------------------------------- nginx

@pytest.mark.parametrize("tier", ["mini", "small", "small-failover", "production"])
def test_nginx_accepts_every_tiers_proxy_configuration(tier, tmp_path):
    """`nginx -t` on the rendered nginx.conf, as `docker compose exec nginx nginx -t` runs it
    before a reload: certificates at /etc/dialog/tls, compose service names resolvable."""
    need("nginx")
    context = make_context(tier)
    proxy = next(h for h in context["hosts"] if "proxy" in h["roles"])
    files, compose = rendered(context, proxy["name"])
    service = compose["services"]["nginx"]
    mounts = bind_sources(tmp_path, service, files)
    tls = next(source for source, target, _ in mounts if target == "/etc/dialog/tls")
    self_signed(tmp_path / "host" / "etc/dialog/tls")
    assert os.path.exists(os.path.join(tls, "cert.pem"))
    conf = service["command"][service["command"].index("-c") + 1]
    status, out, err = run_check(
        tmp_path, {"service": "nginx", "image": service["image"], "command": service["command"],
                   "mounts": mounts, "address": proxy["private_address"],
                   "services": sorted(compose["services"])},
        "run", "nginx", "-t", "-c", conf)
    assert status == 0, out + err
    assert "test is successful" in err


# ---------------------------------------------------------------------------------- coturn

def turn_check(tmp_path, provider, *args):
    context = make_context("small-failover")
    context["provider"] = provider
    voices = [h for h in context["hosts"] if "voice" in h["roles"]]
    voice = voices[0]
    files, compose = rendered(context, voice["name"])
    service = compose["services"]["coturn"]
    # The relay binds the private address on AWS, the droplet's public one on DigitalOcean.
    address = voice["public_addresses"][0] if provider == "digitalocean" else \
        voice["private_address"]
    status, out, err = run_check(
        tmp_path, {"service": "coturn", "image": service["image"],
                   "command": service["command"],
                   "mounts": bind_sources(tmp_path, service, files), "address": address,
                   "services": sorted(compose["services"])},
        "turn", *args)
    assert status == 0, out + err
    return context, voices, json.loads(out.splitlines()[-1]), err


@pytest.mark.parametrize("provider", ["aws", "digitalocean"])
def test_coturn_relays_to_public_peers_and_refuses_private_ones(provider, tmp_path):
    """A TURN client against Debian's coturn started from the rendered turnserver.conf: a
    permission toward a private, loopback, link-local (metadata) or reserved address, or toward
    another host of the deployment, is answered 403; public peers and the other voice host's
    relay address (two callers relaying through this deployment) are allowed."""
    need("coturn")
    context = make_context("small-failover")
    own = [h["private_address"] for h in context["hosts"] if "voice" not in h["roles"]]
    others = [h["public_addresses"][0] for h in context["hosts"]
              if "voice" not in h["roles"] and h["public_addresses"]]
    voices = [h for h in context["hosts"] if "voice" in h["roles"]]
    _, _, result, err = turn_check(
        tmp_path, provider, context["secrets"]["turn_username"],
        context["secrets"]["turn_password"],
        *(PRIVATE_PEERS + own[:3] + others[:2] + PUBLIC_PEERS
          + [voices[1]["public_addresses"][0]]))
    assert isinstance(result["relayed"], list), (result, err[-2000:])
    assert result["relayed"][0] == voices[0]["public_addresses"][0]
    answers = result["peers"]
    opened = [p for p in PRIVATE_PEERS + own[:3] + others[:2] if answers[p][0] != 403]
    assert opened == [], answers
    refused = [p for p in PUBLIC_PEERS + [voices[1]["public_addresses"][0]]
               if answers[p] != [0, ""]]
    assert refused == [], answers


def test_coturn_refuses_a_wrong_password(tmp_path):
    need("coturn")
    context = make_context("small-failover")
    _, _, result, _ = turn_check(tmp_path, "aws", context["secrets"]["turn_username"],
                                 "not-the-password", "8.8.8.8")
    assert "401" in str(result["relayed"]) and result["peers"] == {}


# --------------------------------------------------------------------------- node exporter

def test_node_exporter_serves_host_metrics_on_the_private_address(tmp_path):
    """prometheus-node-exporter with the rendered flags (--path.rootfs, --web.listen-address
    on the private address): /metrics answers there with the host's CPU counters."""
    need("node-exporter")
    context = make_context("small")
    host = context["hosts"][0]
    _, compose = rendered(context, host["name"])
    service = compose["services"]["node-exporter"]
    listen = next(a for a in service["command"] if a.startswith("--web.listen-address="))
    assert listen == "--web.listen-address=%s:9100" % host["private_address"]
    # The host's root at /host, read-only; a scratch directory stands in for it here.
    status, out, err = run_check(
        tmp_path, {"service": "node-exporter", "image": service["image"],
                   "command": service["command"],
                   "mounts": [(str(tmp_path), "/host", True)],
                   "address": host["private_address"], "services": sorted(compose["services"])},
        "http", "http://%s:9100/metrics" % host["private_address"])
    assert status == 0, err
    assert "node_cpu_seconds_total{" in out, (out[:500], err[-2000:])
