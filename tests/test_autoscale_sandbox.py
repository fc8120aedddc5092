"""Autoscaling end to end in the sandbox (devtools/sandbox_autoscale.py's scenario): the real
sensor polling a real Prometheus, the pack's rules, dialog.scale with its real actions over SSH.
Stand-ins: the hosts' node_exporters (driven exporters) and the container runtime. Needs root,
`ip netns` and Debian's prometheus, as CI has; without them the test fails with the reason."""

import contextlib
import io

import pytest

from sandbox.hosts import preflight
from sandbox_autoscale import DEPLOYMENT, scenario
from sandbox_deploy import sandbox

# Sandbox hosts: one sandbox per machine, so under pytest-xdist these run in one group, on
# one worker, one test after another (./dialog-local test runs -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("netns")


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    problems = preflight()
    if problems:
        pytest.fail("the sandbox needs root and `ip netns`: " + "; ".join(problems),
                    pytrace=False)
    lines = []
    with sandbox() as box:
        try:
            result = scenario(box, str(tmp_path_factory.mktemp("autoscale")), lines.append)
        finally:
            with contextlib.redirect_stdout(io.StringIO()):
                box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT},
                        progress=lambda line: None)
    result["lines"] = lines
    return result


def test_a_cpu_breach_takes_small_failover_from_3_to_5_healthy_dialog_servers(facts):
    assert facts["deploy"] == (3, 3)
    request = facts["dialog_out"]["request"]
    assert (request["current"], request["desired"], request["direction"]) == (3, 5, "out")
    assert facts["dialog_out"] == dict(facts["dialog_out"], servers=5, healthy=5)
    text = "\n".join(facts["lines"])
    assert "rule scale_out_dialog_server -> dialog.scale" in text
    assert "[chat] Scaled auto: dialog-server 3 -> 5" in text


def test_a_cassandra_disk_breach_adds_exactly_one_node_then_cleans_up(facts):
    out = facts["cassandra_out"]
    assert out["request"]["metrics"]["metric"] == "disk"
    assert (out["before"], out["after"], out["added"]) == (3, 4, ["auto-cassandra-4"])
    assert out["cleaned"] == ["auto-cassandra-1", "auto-cassandra-2", "auto-cassandra-3"]


def test_scale_in_by_hand_drains_and_decommissions(facts):
    assert facts["dialog_in"]["removed"] == ["auto-dialog-server-5", "auto-dialog-server-4"]
    assert facts["cassandra_in"]["removed"] == ["auto-cassandra-4"]
    assert facts["final"] == {"healthy": True, "dialog-server": 3, "cassandra": 3}
