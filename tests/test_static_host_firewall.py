"""Static hosts: the plan's firewall as an nftables table of the pack's own on each host, and
the seed's hardware minimums checked over SSH before anything is installed."""

import contextlib
import shutil
import subprocess

import pytest

from lib.errors import InputError
from lib.hosts import host_firewall
from lib.planner import build_plan
from lib.providers import open_provider

ADMIN = ["203.0.113.0/24", "2001:db8:a::/48"]
HOSTS = [
    {"name": "edge-a", "address": "198.51.100.1", "private_address": "10.0.0.1",
     "roles": ["proxy"]},
    {"name": "edge-b", "address": "198.51.100.2", "private_address": "10.0.0.2",
     "roles": ["proxy"]},
    {"name": "web", "address": "10.0.0.3", "roles": ["web"]},
    {"name": "media", "address": "10.0.0.4", "roles": ["voice", "push"]},
    {"name": "app", "address": "10.0.0.5", "roles": ["dialog-server"]},
    {"name": "db", "address": "10.0.0.6", "roles": ["postgres", "cassandra"]},
    {"name": "db2", "address": "2001:db8:b::7", "roles": ["cassandra"]},
]
ADDRESSES = sorted({h.get("private_address") or h["address"] for h in HOSTS}
                   | {h["address"] for h in HOSTS})
BIG = {"cpus": 16, "memory_kb": 64 * 1024 * 1024, "disk_kb": 2000 * 1000 * 1000}


def plan():
    return build_plan("small", "static", admin_networks=ADMIN)


def text_for(roles):
    return host_firewall.ruleset("dialog", "x", roles, plan()["firewall"], ADDRESSES)


def test_internal_ports_only_from_the_deployment_admin_from_admin_networks():
    text = text_for(["dialog-server", "cassandra"])
    assert "tcp dport 9090 ip saddr @deployment_v4 accept" in text
    assert "tcp dport 9042 ip6 saddr @deployment_v6 accept" in text
    assert "tcp dport 22 ip saddr { 203.0.113.0/24 } accept" in text
    assert "tcp dport 22 ip6 saddr { 2001:db8:a::/48 } accept" in text
    drops = [line.strip() for line in text.splitlines() if line.strip().endswith("drop")]
    assert len(drops) == 1 and all(p in drops[0] for p in ("9090", "9042", "7000", "22"))
    assert "10.0.0.6" in text and "2001:db8:b::7" in text
    assert "tcp dport 9090 accept" not in text and "tcp dport 80" not in text


def test_public_ports_are_open_to_all_and_the_table_is_replaced_alone():
    text = text_for(["proxy"])
    assert "tcp dport 80 accept" in text and "tcp dport 443 accept" in text
    assert text.count("table inet dialog") == 3 and "delete table inet dialog" in text
    assert "flush ruleset" not in text      # the operator's own tables stay


def test_allows_answers_as_the_rules_say():
    rules, roles = plan()["firewall"], ["dialog-server"]
    assert host_firewall.allows(rules, roles, 9090, "10.0.0.1", ADDRESSES)
    assert not host_firewall.allows(rules, roles, 9090, "192.0.2.9", ADDRESSES)
    assert host_firewall.allows(rules, roles, 22, "203.0.113.50", ADDRESSES)
    assert not host_firewall.allows(rules, roles, 22, "192.0.2.9", ADDRESSES)


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None,
                    reason="needs nft and unshare")
@pytest.mark.parametrize("roles", [["proxy"], ["voice", "push"], ["dialog-server"],
                                   ["postgres", "cassandra"], ["web"]])
def test_nft_accepts_the_ruleset(tmp_path, roles):
    path = tmp_path / "firewall.nft"
    path.write_text(text_for(roles))
    # In a network namespace of its own: -c only checks, and even that never touches ours.
    result = subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_the_applied_script_and_template_are_real_files():
    for name in ("apply_firewall.sh", "hardware.sh"):
        result = subprocess.run(["sh", "-n", host_firewall.SCRIPTS + "/" + name],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


# ---- the static driver, SSH replaced at its narrowest point ---------------------------------

class Hosts:
    """Stands for the hosts: each one's hardware, the firewall each holds, the runner's address
    as they see it."""

    def __init__(self, hardware=None, runner="203.0.113.7"):
        self.hardware = hardware or {}
        self.runner = runner
        self.firewalls = {}
        self.sessions = []

    def install(self, monkeypatch, driver):
        @contextlib.contextmanager
        def session(host, ssh, hosts):
            self.sessions.append(host["name"])
            yield host["name"]

        def apply(connection, name, text, check_only=False):
            if self.firewalls.get(connection) == text:
                return "unchanged"
            if check_only:
                return "would-apply"
            self.firewalls[connection] = text
            return "applied"

        monkeypatch.setattr(driver, "host_session",
                            staticmethod(session) if isinstance(driver, type) else session)
        monkeypatch.setattr(host_firewall, "read_hardware",
                            lambda connection, name: dict(BIG, **self.hardware.get(name, {})))
        monkeypatch.setattr(host_firewall, "apply", apply)
        monkeypatch.setattr(host_firewall, "runner_address", lambda connection: self.runner)


def static_driver():
    return open_provider("static", {"name": "onprem", "provider": "static", "hosts": HOSTS},
                         None)


def test_every_host_gets_its_firewall_once(monkeypatch):
    driver, hosts = static_driver(), Hosts()
    hosts.install(monkeypatch, driver)
    changes = driver.reconcile(plan())
    assert sorted(c["name"] for c in changes) == sorted(h["name"] for h in HOSTS)
    assert "tcp dport 9090 ip saddr @deployment_v4 accept" in hosts.firewalls["app"]
    assert driver.reconcile(plan()) == []      # unchanged the second time


def test_dry_run_changes_no_host(monkeypatch):
    driver, hosts = static_driver(), Hosts()
    hosts.install(monkeypatch, driver)
    assert len(driver.reconcile(plan(), dry_run=True)) == len(HOSTS)
    assert hosts.firewalls == {}


def test_a_host_below_the_minimums_is_named_before_any_firewall(monkeypatch):
    driver = static_driver()
    hosts = Hosts(hardware={"app": {"cpus": 2, "memory_kb": 4 * 1024 * 1024},
                            "db": {"disk_kb": 40 * 1000 * 1000}})
    hosts.install(monkeypatch, driver)
    with pytest.raises(InputError) as caught:
        driver.reconcile(plan())
    text = str(caught.value)
    assert caught.value.field == "hosts"
    assert "app has 2 CPUs; dialog-dialog-server-1 (dialog-server) needs 4" in text
    assert "app has 4.0 GiB of memory; dialog-dialog-server-1 (dialog-server) needs 8 GB" in text
    assert "db has 40 GB on the filesystem of /var/lib/dialog" in text
    assert hosts.firewalls == {}


def test_a_firewall_that_would_shut_the_runner_out_is_not_applied(monkeypatch):
    driver, hosts = static_driver(), Hosts(runner="192.0.2.44")
    hosts.install(monkeypatch, driver)
    with pytest.raises(InputError, match="^admin_networks: .* 192.0.2.44"):
        driver.reconcile(plan())
    assert hosts.firewalls == {}
