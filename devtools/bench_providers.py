#!/usr/bin/env python3
"""Provisioning cost per tier and provider, measured on the local emulators in one run.

    ./dialog-local bench providers

For every tier (with and without the S3 storage roles) and both clouds: mutating API calls of
a fresh provision, of an immediate re-run and of a destroy, the creates per server group
against the targets (AWS: one RunInstances per group; DigitalOcean: ceil(n/10) droplet creates
per group), the egress and shared-files resources a fresh provision adds (AWS: NAT gateways;
both: the files bucket, S3 on AWS and Spaces on DigitalOcean), and wall times. The AWS side
is moto's server, the DigitalOcean side the pack's fake of the DO API
(devtools/fake_digitalocean.py) with moto's S3 as Spaces, all over HTTP on 127.0.0.1: the
figures count real requests of the real clients, the times are the emulators' and not the
clouds'.
"""

import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "actions"), HERE]

# pylint: disable=wrong-import-position
from aws_emulator import AwsEmulator  # noqa: E402
from fake_digitalocean import FakeDigitalOcean  # noqa: E402
from lib.planner import build_plan  # noqa: E402
from lib.providers import aws, digitalocean  # noqa: E402
from lib.providers.base import CallLog  # noqa: E402
from lib.tables import format_table  # noqa: E402

CASES = [("mini", False, None), ("small", False, None), ("small", True, None),
         ("small-failover", False, None), ("small-failover", True, None),
         ("small-failover", False, 13), ("production", False, None), ("production", True, None)]
CREATE_CALL = {"aws": "RunInstances", "digitalocean": "POST /v2/droplets"}


def _driver(provider, emulator, calls):
    if provider == "aws":
        return aws.Driver(emulator.profile(), "us-east-1", calls=calls, wait_delay=0.05)
    return digitalocean.Driver(emulator.profile(), "fra1", calls=calls, poll_interval=0.02)


def _timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def _buckets(s3_server):
    return len(s3_server.client("s3").list_buckets()["Buckets"])


def measure(provider, emulator, tier, storage, dialog_servers, s3_server):
    plan = build_plan(tier, provider=provider, deployment="bench", with_storage=storage,
                      dialog_servers=dialog_servers, admin_networks=["203.0.113.0/24"])
    groups = {}
    for host in plan["hosts"]:
        groups[host["group"]] = groups.get(host["group"], 0) + 1
    target = len(groups) if provider == "aws" else sum(math.ceil(n / 10) for n in groups.values())
    fresh, rerun, gone = CallLog(), CallLog(), CallLog()
    _, t_fresh = _timed(lambda: _driver(provider, emulator, fresh).reconcile(plan))
    nat = emulator.resource_counts("bench")["nat_gateways"] if provider == "aws" else "-"
    buckets = _buckets(s3_server)
    changes, t_rerun = _timed(lambda: _driver(provider, emulator, rerun).reconcile(plan))
    _, t_destroy = _timed(lambda: _driver(provider, emulator, gone).destroy(
        "bench", delete_data=True))
    left = sum(emulator.resource_counts().values()) if provider == "digitalocean" else \
        sum(emulator.resource_counts("bench").values())
    left += _buckets(s3_server)
    creates = fresh.mutating.count(CREATE_CALL[provider])
    label = tier + (" +storage" if storage else "") + \
        (" (%d dialog servers)" % dialog_servers if dialog_servers else "")
    return [label, provider, len(plan["hosts"]),
            len(fresh.mutating), "%d/%d %s" % (creates, target, "ok" if creates <= target
                                               else "OVER"),
            nat, buckets, len(rerun.mutating), len(changes), len(gone.mutating), left,
            "%.2f" % t_fresh, "%.2f" % t_rerun, "%.2f" % t_destroy]


def main():
    rows = []
    with AwsEmulator() as moto_server, FakeDigitalOcean(boot_delay=0) as fake_do:
        fake_do.spaces_endpoint = moto_server.endpoint_url   # moto's S3 stands in for Spaces
        for tier, storage, dialog_servers in CASES:
            for provider, emulator in (("aws", moto_server), ("digitalocean", fake_do)):
                moto_server.reset()
                emulator.reset()
                rows.append(measure(provider, emulator, tier, storage, dialog_servers,
                                    moto_server))
    print(format_table(
        ["TIER", "PROVIDER", "HOSTS", "MUTATING (FRESH)", "CREATES/TARGET", "NAT GW", "BUCKETS",
         "MUTATING (RE-RUN)",
         "CHANGES (RE-RUN)", "MUTATING (DESTROY)", "LEFT AFTER DESTROY", "FRESH S", "RE-RUN S",
         "DESTROY S"], rows))
    print("\nCREATES: RunInstances calls on AWS (target: one per server group), droplet "
          "create calls on DigitalOcean (target: ceil(n/10) per group).")
    print("NAT GW: NAT gateways of the deployment after a fresh provision (AWS; its Elastic IP "
          "is in the mutating calls). BUCKETS: files buckets (multi-server tiers without "
          "storage). Destroy runs with delete_data=true, so nothing is left.")
    bad = [r for r in rows if r[7] or r[8] or r[10] or r[4].endswith("OVER")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
