"""Issue 14 integration: what the sandbox chaos run found wrong between the parts."""

import os

import local_runner
from aws_emulator import AwsEmulator
from lib.planner import build_plan
from lib.providers import aws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "dialog.yaml.example")
ADMIN = ["203.0.113.0/24"]


def test_a_profile_without_zones_deploys_in_two_zones_as_stackstorm_loads_it():
    # StackStorm fills an array the config leaves out with [] (it has items): a profile that
    # names no zones arrives with availability_zones == [], which must mean "choose them".
    config = local_runner.load_config(ROOT, EXAMPLE, local_runner.MemoryDatastore())
    assert config["profiles"]["aws-eu"]["availability_zones"] == []
    with AwsEmulator() as emu:
        driver = aws.Driver(emu.profile(availability_zones=[]), "us-east-1", wait_delay=0.01,
                            wait_attempts=50)
        driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
        zones = {h.get("zone") for h in driver.inventory("dialog")}
    assert len(zones) == 2
