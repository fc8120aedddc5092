#!/usr/bin/env python3
"""Autoscaling end to end in the local sandbox: sensor -> rule -> dialog.scale.

    ./dialog-local sandbox-autoscale

Deploys small-failover in the sandbox (sandbox_deploy.py), then:

1. drives the dialog servers' CPU to 90%: the real HostMetricsSensor polls a real Prometheus,
   dispatches dialog.scale_requested after `breach_polls` polls, the pack's rules (matched by
   devtools/rules_engine.py, as st2rulesengine would) run dialog.scale, and the deployment goes
   from 3 to 5 healthy dialog servers;
2. drives one Cassandra node's data disk to 85%: exactly one node is added, then the older
   nodes are cleaned up one by one.

Stand-ins: each host's node_exporter is a DrivenNodeExporter on 127.0.0.1 (the sandbox's fake
container runtime runs none) labelled with the host's role and address, as the deploy's
prometheus.yml labels them; chat announcements are printed instead of posted.
"""

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions"), os.path.join(ROOT, "sensors")]

# pylint: disable=wrong-import-position
import local_runner  # noqa: E402
import rules_engine  # noqa: E402
from metrics_driver import DrivenNodeExporter, LocalPrometheus  # noqa: E402
from sandbox.hosts import preflight  # noqa: E402
from sandbox_deploy import sandbox, summary  # noqa: E402

DEPLOYMENT = "auto"
POLL = 2.0


def sensor_service_for(datastore):
    """StackStorm's sensor service API (the st2tests stand-in when st2 is absent), with the
    datastore the sandbox's actions use, so the sensor reads the record the deploy wrote."""
    local_runner._action_base_class()  # pylint: disable=protected-access
    from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

    class SandboxSensorService(MockSensorService):
        def __init__(self):
            super().__init__(MockSensorWrapper("dialog", "HostMetricsSensor"))
            self.store = local_runner.LocalActionService("dialog", "HostMetricsSensor",
                                                         datastore)

        def get_value(self, name, local=True, scope="system", decrypt=False):
            return self.store.get_value(name, local=local, scope=scope, decrypt=decrypt)

        def set_value(self, name, value, ttl=None, local=True, scope="system",
                      encrypt=False):
            return self.store.set_value(name, value, ttl=ttl, local=local, scope=scope,
                                        encrypt=encrypt)

        def delete_value(self, name, local=True, scope="system"):
            return self.store.delete_value(name, local=local, scope=scope)

    return SandboxSensorService()


class Metrics(object):
    """One driven exporter per dialog server and Cassandra host, and Prometheus over them."""

    def __init__(self, workdir, hosts):
        self.exporters = {}
        self.prometheus = None
        self.workdir = workdir
        self.update(hosts)

    def groups(self, hosts):
        groups = []
        for host in hosts:
            for role in host["roles"]:
                if role in ("dialog-server", "cassandra"):
                    if host["name"] not in self.exporters:
                        self.exporters[host["name"]] = DrivenNodeExporter(cpu=0.4, disk=0.3)
                    groups.append({"labels": {"role": role, "instance": "%s:9100"
                                              % host["private_address"]},
                                   "targets": ["127.0.0.1:%d" % self.exporters[host["name"]].port]})
        return groups

    def update(self, hosts):
        groups = self.groups(hosts)
        if self.prometheus is None:
            self.prometheus = LocalPrometheus(self.workdir, groups)
        else:
            self.prometheus.reload(groups)

    def drive(self, hosts, role, **values):
        for host in hosts:
            if role in host["roles"]:
                for name, value in values.items():
                    setattr(self.exporters[host["name"]], name, value)

    def close(self):
        if self.prometheus:
            self.prometheus.close()
        for exporter in self.exporters.values():
            exporter.close()


def schemas_of(ref):
    return local_runner.parameter_schemas(local_runner.load_action_metadata(ref))


def react(box, trigger, payload):
    """What st2rulesengine would run for the trigger: the pack's enabled rules' actions."""
    results = []
    for rule, ref, params in rules_engine.enforce(trigger, payload, schemas_of):
        if ref == "dialog.announce":
            print("  [chat] %s" % params["message"], flush=True)
            continue
        print("  rule %s -> %s %s" % (rule, ref, json.dumps(params, sort_keys=True)), flush=True)
        ok, result, _ = box.run(ref, params, progress=lambda line: None)
        finished = {"action_name": ref, "status": "succeeded" if ok else "failed",
                    "execution_id": "local", "result": result}
        for _, ref2, params2 in rules_engine.enforce("core.st2.generic.actiontrigger",
                                                      finished, schemas_of):
            if ref2 == "dialog.announce":
                print("  [chat] %s" % params2["message"], flush=True)
        results.append((ok, result))
    return results


def poll_until_scaled(box, sensor, service, role, timeout=180):
    deadline = time.monotonic() + timeout
    seen = len(service.dispatched_triggers)
    while time.monotonic() < deadline:
        sensor.poll()
        for item in service.dispatched_triggers[seen:]:
            print("  sensor dispatched %s %s" % (item["trigger"], json.dumps(
                {k: item["payload"][k] for k in ("role", "current", "desired", "reason")
                 if k in item["payload"]})), flush=True)
            if item["trigger"] == "dialog.scale_requested" and item["payload"]["role"] == role:
                return item, react(box, item["trigger"], item["payload"])
        seen = len(service.dispatched_triggers)
        time.sleep(POLL)
    raise RuntimeError("no %s scale request within %ss" % (role, timeout))


def count(hosts, role):
    return sum(1 for h in hosts if role in h["roles"])


def main(_argv):
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    local_runner._action_base_class()  # pylint: disable=protected-access  # st2 or stand-in
    from host_metrics_sensor import HostMetricsSensor  # pylint: disable=import-outside-toplevel
    workdir = tempfile.mkdtemp(prefix="dialog-autoscale-")
    with sandbox() as box:
        print("== dialog.deploy tier=small-failover deployment=%s" % DEPLOYMENT, flush=True)
        ok, result, _ = box.run("dialog.deploy", {"tier": "small-failover",
                                                  "deployment": DEPLOYMENT},
                                progress=lambda line: None)
        if not ok:
            print(json.dumps(result, indent=1, default=str)[-3000:])
            return 1
        hosts = result["output"]["hosts"]
        print("deployed: %d dialog servers, %d cassandra nodes" % (
            count(hosts, "dialog-server"), count(hosts, "cassandra")), flush=True)
        metrics = Metrics(workdir, hosts)
        status = 1
        try:
            service = sensor_service_for(box.datastore)
            sensor = HostMetricsSensor(service, config={"autoscaling": {
                "deployments": [{"deployment": DEPLOYMENT,
                                 "prometheus_url": metrics.prometheus.url}],
                "poll_interval": POLL, "breach_polls": 3, "rate_window": "8s"}})
            sensor.setup()

            print("\n== driving the dialog servers' CPU to 90%", flush=True)
            metrics.drive(hosts, "dialog-server", cpu=0.9)
            _, outcomes = poll_until_scaled(box, sensor, service, "dialog-server")
            assert outcomes and outcomes[0][0], outcomes
            ok, state, _ = box.run("dialog.status", {"deployment": DEPLOYMENT},
                                   progress=lambda line: None)
            hosts = state["hosts"]
            servers = [h for h in hosts if "dialog-server" in h["roles"]]
            print("dialog servers: %d, healthy: %d" % (
                len(servers), sum(1 for h in servers if h["healthy"])), flush=True)
            assert len(servers) == 5 and all(h["healthy"] for h in servers)
            metrics.update(hosts)
            metrics.drive(hosts, "dialog-server", cpu=0.5)

            print("\n== driving one cassandra node's data disk to 85%", flush=True)
            first = [h for h in hosts if "cassandra" in h["roles"]][:1]
            metrics.drive(first, "cassandra", disk=0.85)
            _, outcomes = poll_until_scaled(box, sensor, service, "cassandra")
            ok, scaled = outcomes[0]
            assert ok, scaled
            output = scaled["output"]
            print("cassandra %d -> %d, added %s, cleanup on %s" % (
                output["before"], output["after"], ", ".join(output["added"]),
                ", ".join(output["cleaned"])), flush=True)
            assert output["after"] == output["before"] + 1 == 4 and len(output["added"]) == 1
            assert output["cleaned"] == ["auto-cassandra-1", "auto-cassandra-2",
                                         "auto-cassandra-3"]
            ok, state, _ = box.run("dialog.status", {"deployment": DEPLOYMENT},
                                   progress=lambda line: None)
            print("\n" + summary({"deployment": DEPLOYMENT, "health": state["hosts"],
                                  "endpoints": state["endpoints"]}), flush=True)
            assert state["healthy"] and count(state["hosts"], "cassandra") == 4
            status = 0
        finally:
            metrics.close()
            box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT},
                    progress=lambda line: None)
    print("sandbox torn down")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
