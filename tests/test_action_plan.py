"""dialog.plan: every tier x provider x droplet class reproduces the seed; bad input is refused."""

import contextlib
import io
import ipaddress
import re
import socket

from st2tests.base import BaseActionTestCase

from lib.catalog import default_catalog
from lib.planner import build_plan
from plan import PlanAction
from seed import read_seed

SEED = read_seed()
CATALOG = default_catalog()
TIERS = ["mini", "small", "small-failover", "production"]
PROVIDERS = ["aws", "digitalocean", "static"]
CLASSES = ["standard", "optimized"]
DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
WORLD = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}


class NoNetwork:
    """Any attempt to open a connection fails the test: planning is offline."""

    def __enter__(self):
        self._connect = socket.socket.connect

        def refuse(*_args, **_kwargs):
            raise AssertionError("dialog.plan tried to reach the network")

        socket.socket.connect = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._connect


class PlanActionTestCase(BaseActionTestCase):
    action_cls = PlanAction

    def run_plan(self, config=None, **parameters):
        action = self.get_action_instance(config=config or {})
        printed = io.StringIO()
        with NoNetwork(), contextlib.redirect_stdout(printed):
            succeeded, result = action.run(**parameters)
        return succeeded, result, printed.getvalue()

    def test_every_tier_provider_and_class_reproduces_the_seed(self):
        for tier in TIERS:
            for provider in PROVIDERS:
                for klass in CLASSES:
                    for storage in ([False] if tier == "mini" else [False, True]):
                        with self.subTest(tier=tier, provider=provider, klass=klass,
                                          storage=storage):
                            ok, plan, printed = self.run_plan(
                                tier=tier, provider=provider, droplet_class=klass,
                                with_storage=storage)
                            self.assertTrue(ok, plan)
                            self.check_against_seed(plan, tier, provider, klass, storage)
                            self.check_firewall(plan)
                            self.check_totals(plan)
                            for host in plan["hosts"]:
                                self.assertIn(host["name"], printed)

    def check_against_seed(self, plan, tier, provider, klass, storage):
        self.assertEqual((plan["tier"], plan["provider"]), (tier, provider))
        low, high = SEED[tier]["capacity"]
        self.assertEqual(plan["capacity"], {"users_min": low, "users_max": high})
        specs = CATALOG.tier(tier)["servers"]
        expected_groups = [s["name"] for s in specs if not s.get("optional") or storage]
        self.assertEqual(list(dict.fromkeys(h["group"] for h in plan["hosts"])),
                         expected_groups)
        for index, spec in enumerate(specs):
            if spec["name"] not in expected_groups:
                continue
            block = SEED[tier]["blocks"][index]
            hosts = [h for h in plan["hosts"] if h["group"] == spec["name"]]
            self.assertEqual(len(hosts), spec["count"]["default"])
            for host in hosts:
                self.assertEqual((host["cpus"], host["memory_gb"]),
                                 (block["cpus"], block["memory_gb"]))
                self.assertEqual(host["roles"], spec["roles"])
                data = [(d["size_gb"], d["kind"]) for d in host["disks"]
                        if d["purpose"] != "system" or provider == "static"]
                if provider == "aws":
                    self.assertEqual(host["size"], block["aws"][0])
                    if block["aws"][1]:
                        self.assertEqual(data, [block["aws"][1]])
                elif provider == "digitalocean":
                    size = CATALOG.droplet_size(host["size"])
                    described = block["droplets"][klass]
                    self.assertEqual(
                        (size["class"], size["memory_gb"], size["vcpus"], size["disk_gb"]),
                        (klass, described["memory_gb"], described["vcpus"],
                         described["disk_gb"]))
                    if described["volume_gb"]:
                        self.assertEqual(data, [(described["volume_gb"], "ssd")])
                else:
                    self.assertIsNone(host["size"])
                    self.assertEqual(data, block["disks"])
        public = {(r["protocol"], r["from_port"], r["to_port"]) for r in plan["firewall"]
                  if r["source"] == "public"}
        seed_external = set()
        for index, spec in enumerate(specs):
            if spec["name"] in expected_groups:
                for protocol, text, exposure in SEED[tier]["blocks"][index]["ports"]:
                    if exposure == "external":
                        low, _, high = text.partition("-")
                        seed_external.add((protocol, int(low), int(high or low)))
        self.assertEqual(public, seed_external)

    def check_firewall(self, plan):
        internal = set()
        for spec in CATALOG.tier(plan["tier"])["servers"]:
            for rule in spec["ports"]:
                if rule["exposure"] == "internal":
                    internal.update((rule["role"], t) for t in rule["ports"])
        for rule in plan["firewall"]:
            text = str(rule["from_port"]) if rule["from_port"] == rule["to_port"] else \
                "%d-%d" % (rule["from_port"], rule["to_port"])
            if (rule["role"], text) in internal:
                self.assertEqual(rule["source"], "internal", rule)
            if rule["source"] != "public":
                self.assertFalse({ipaddress.ip_network(c) for c in rule["cidrs"]} & WORLD, rule)
        ssh = [(r["role"], r["source"], r["cidrs"]) for r in plan["firewall"]
               if r["from_port"] == 22]
        # ssh_address defaults to jump on the clouds: admin networks reach the proxies only.
        self.assertEqual(ssh, [("*", "admin", [])] if plan["provider"] == "static" else
                         [("proxy", "admin", []), ("*", "internal", [])])

    def check_totals(self, plan):
        hosts = plan["hosts"]
        names = [h["name"] for h in hosts]
        self.assertEqual(len(names), len(set(names)))
        self.assertTrue(all(DNS_LABEL.match(n) for n in names), names)
        self.assertEqual(plan["totals"], {
            "hosts": len(hosts),
            "cpus": sum(h["cpus"] for h in hosts),
            "memory_gb": sum(h["memory_gb"] for h in hosts),
            "disk_gb": sum(d["size_gb"] for h in hosts for d in h["disks"]),
        })
        self.assertEqual(plan["public_ips"],
                         sum(h["public_ips"] for h in hosts) + len(plan["floating_ips"]))

    def test_mini_gets_three_public_addresses_on_its_one_server(self):
        ok, plan, _ = self.run_plan(tier="mini", provider="aws")
        self.assertTrue(ok)
        self.assertEqual([(h["name"], h["public_ips"]) for h in plan["hosts"]],
                         [("dialog-allinone-1", 3)])
        self.assertEqual(plan["public_ips"], 3)

    def test_failover_proxies_share_one_floating_address(self):
        ok, plan, printed = self.run_plan(tier="small-failover", provider="digitalocean")
        self.assertTrue(ok)
        self.assertEqual(plan["floating_ips"], [{
            "name": "dialog-proxy-vip-1", "group": "proxy",
            "hosts": ["dialog-proxy-1", "dialog-proxy-2"]}])
        self.assertIn("dialog-proxy-vip-1", printed)

    def test_small_takes_one_or_three_cassandra_nodes(self):
        for nodes in (1, 3):
            ok, plan, _ = self.run_plan(tier="small", cassandra_nodes=nodes)
            self.assertTrue(ok)
            self.assertEqual(len([h for h in plan["hosts"] if "cassandra" in h["roles"]]), nodes)

    def test_profile_supplies_provider_region_and_admin_networks(self):
        config = {"default_profile": "do", "profiles": {"do": {
            "provider": "digitalocean", "region": "ams3", "digitalocean_token": "tok-123",
            "admin_networks": ["198.51.100.0/24"]}}}
        ok, plan, printed = self.run_plan(config=config, tier="small")
        self.assertTrue(ok)
        self.assertEqual((plan["provider"], plan["region"]), ("digitalocean", "ams3"))
        ssh = [r for r in plan["firewall"] if r["source"] == "admin"]
        self.assertEqual(ssh[0]["cidrs"], ["198.51.100.0/24"])
        self.assertNotIn("tok-123", repr(plan) + printed)
        ok, plan, _ = self.run_plan(config=config, tier="small", provider="aws")
        self.assertEqual((plan["provider"], plan["region"]), ("aws", "us-east-1"))

    def test_same_inputs_give_the_same_plan(self):
        first = self.run_plan(tier="production", provider="aws", with_storage=True)
        second = self.run_plan(tier="production", provider="aws", with_storage=True)
        self.assertEqual(first, second)

    def test_bad_input_names_the_field_and_the_allowed_values(self):
        cases = [
            ({"tier": "huge"}, "tier",
             ["mini", "small", "small-failover", "production"]),
            ({"tier": "small", "provider": "gcp"}, "provider",
             ["aws", "digitalocean", "static"]),
            ({"tier": "small", "droplet_class": "premium"}, "droplet_class",
             ["standard", "optimized"]),
            ({"tier": "small", "cassandra_nodes": 2}, "cassandra_nodes", ["1", "3"]),
            ({"tier": "small-failover", "cassandra_nodes": 2}, "cassandra_nodes",
             ["3, 4, 5, ..."]),
            ({"tier": "small", "with_storage": True, "storage_nodes": 2}, "storage_nodes",
             ["1", "3"]),
            ({"tier": "small", "provider": "digitalocean", "region": "mars1"}, "region",
             CATALOG.provider("digitalocean")["regions"]),
            ({"tier": "small", "profile": "nope"}, "profile", []),
        ]
        for parameters, field, allowed in cases:
            with self.subTest(**parameters):
                ok, result, _ = self.run_plan(**parameters)
                self.assertFalse(ok)
                self.assertEqual((result["field"], result["allowed"]), (field, allowed))
                self.assertTrue(result["error"].startswith(field + ": "), result["error"])
                for value in allowed:
                    self.assertIn(str(value), result["error"])

    def test_bad_input_without_a_list_of_values_still_names_the_field(self):
        cases = [
            ({"tier": "small", "deployment": "Bad_Name"}, "deployment", "lowercase letters"),
            ({"tier": "small", "deployment": "a" * 41}, "deployment", "1-40"),
            ({"tier": "small", "region": "moon"}, "region", "not an AWS region"),
            ({"tier": "mini", "cassandra_nodes": 3}, "cassandra_nodes", "shares its server"),
            ({"tier": "mini", "with_storage": True}, "with_storage", "no self-hosted S3"),
            ({"tier": "small", "storage_nodes": 3}, "storage_nodes", "with_storage=true"),
            ({"tier": "small", "admin_networks": ["0.0.0.0/0"]}, "admin_networks",
             "whole internet"),
            ({"tier": "small", "admin_networks": ["office"]}, "admin_networks", "CIDR"),
        ]
        for parameters, field, words in cases:
            with self.subTest(**parameters):
                ok, result, _ = self.run_plan(**parameters)
                self.assertFalse(ok)
                self.assertEqual(result["field"], field)
                self.assertIn(words, result["error"])


def test_dialog_servers_grow_two_at_a_time_from_the_tier_minimum():
    plan = build_plan("small-failover", dialog_servers=5)
    assert [h["name"] for h in plan["hosts"] if h["group"] == "dialog-server"] == [
        "dialog-dialog-server-1", "dialog-dialog-server-2", "dialog-dialog-server-3",
        "dialog-dialog-server-4", "dialog-dialog-server-5"]
    for count in (1, 4, 6):
        try:
            build_plan("small-failover", dialog_servers=count)
        except ValueError as exc:
            assert str(exc).startswith("dialog_servers: ") and "3, 5, 7, ..." in str(exc)
        else:
            raise AssertionError("dialog_servers=%d was accepted" % count)


def test_the_plan_counts_the_nat_gateway_private_aws_hosts_go_out_through():
    from lib.tables import render_plan  # pylint: disable=import-outside-toplevel
    small = build_plan("small", "aws", "us-east-1")
    assert small["nat_gateways"] == 1
    assert "Egress: 1 NAT gateway" in render_plan(small)
    # mini's one host holds the public address; DigitalOcean droplets all have one.
    assert build_plan("mini", "aws", "us-east-1")["nat_gateways"] == 0
    assert build_plan("small", "digitalocean", "fra1")["nat_gateways"] == 0
    monitored = build_plan("small", "aws", "us-east-1", monitoring_networks=["198.51.100.7/32"])
    assert "Prometheus (tcp 9091 on web) open to: 198.51.100.7/32" in render_plan(monitored)
