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

import contextlib
import io
import json
import os
import shutil
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
POLL = 2  # the config schema's poll_interval is an integer


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
                    address = "%s:9100" % host["private_address"]
                    port = self.exporters[host["name"]].port
                    groups.append({"labels": {"role": role, "instance": address},
                                   "targets": ["127.0.0.1:%d" % port]})
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


def react(box, trigger, payload, say=print):
    """What st2rulesengine would run for the trigger: the pack's enabled rules' actions."""
    results = []
    for rule, ref, params in rules_engine.enforce(trigger, payload, schemas_of):
        if ref == "dialog.announce":
            say("  [chat] %s" % params["message"])
            continue
        say("  rule %s -> %s %s" % (rule, ref, json.dumps(params, sort_keys=True)))
        with contextlib.redirect_stdout(io.StringIO()):
            ok, result, _ = box.run(ref, params, progress=lambda line: None)
        finished = {"action_name": ref, "status": "succeeded" if ok else "failed",
                    "execution_id": "local", "result": result}
        answers = rules_engine.enforce("core.st2.generic.actiontrigger", finished, schemas_of)
        for _, ref2, params2 in answers:
            if ref2 == "dialog.announce":
                say("  [chat] %s" % params2["message"])
        results.append((ok, result))
    return results


def poll_until_scaled(box, sensor, service, role, say=print, timeout=180):
    deadline = time.monotonic() + timeout
    seen = len(service.dispatched_triggers)
    while time.monotonic() < deadline:
        sensor.poll()
        for item in service.dispatched_triggers[seen:]:
            shown = {k: item["payload"][k] for k in ("role", "current", "desired", "reason")
                     if k in item["payload"]}
            say("  sensor dispatched %s %s" % (item["trigger"], json.dumps(shown)))
            if item["trigger"] == "dialog.scale_requested" and item["payload"]["role"] == role:
                return item, react(box, item["trigger"], item["payload"], say)
        seen = len(service.dispatched_triggers)
        time.sleep(POLL)
    raise RuntimeError("no %s scale request within %ss" % (role, timeout))


def count(hosts, role):
    return sum(1 for h in hosts if role in h["roles"])


class ScenarioFailed(AssertionError):
    """A step of the scenario did not end as it must."""


def check(condition, message):
    if not condition:
        raise ScenarioFailed(message)


def status_of(box):
    with contextlib.redirect_stdout(io.StringIO()):
        ok, state, _ = box.run("dialog.status", {"deployment": DEPLOYMENT},
                               progress=lambda line: None)
    check(ok, "dialog.status failed: %s" % state.get("error"))
    return state


def scenario(box, workdir, say=print):
    """Deploy, autoscale out both roles, then scale both back in by hand; returns the facts
    the tests check: {"deploy", "dialog_out", "cassandra_out", "dialog_in", "cassandra_in"}."""
    local_runner._action_base_class()  # pylint: disable=protected-access  # st2 or stand-in
    from host_metrics_sensor import HostMetricsSensor  # pylint: disable=import-outside-toplevel
    facts = {}
    say("== dialog.deploy tier=small-failover deployment=%s" % DEPLOYMENT)
    with contextlib.redirect_stdout(io.StringIO()):
        ok, result, _ = box.run("dialog.deploy", {"tier": "small-failover",
                                                  "deployment": DEPLOYMENT},
                                progress=lambda line: None)
    check(ok, "deploy failed: %s" % (result.get("output") or {}).get("failure"))
    hosts = result["output"]["hosts"]
    facts["deploy"] = (count(hosts, "dialog-server"), count(hosts, "cassandra"))
    say("deployed: %d dialog servers, %d cassandra nodes" % facts["deploy"])
    metrics = Metrics(workdir, hosts)
    try:
        service = sensor_service_for(box.datastore)
        # The sensor container loads the same pack config the actions get.
        sensor = HostMetricsSensor(service, config=box.pack_config(autoscaling={
            "deployments": [{"deployment": DEPLOYMENT,
                             "prometheus_url": metrics.prometheus.url}],
            "poll_interval": POLL, "breach_polls": 3, "rate_window": "8s"}))
        sensor.setup()

        say("\n== driving the dialog servers' CPU to 90%")
        metrics.drive(hosts, "dialog-server", cpu=0.9)
        request, outcomes = poll_until_scaled(box, sensor, service, "dialog-server", say)
        check(outcomes and outcomes[0][0], "dialog.scale failed: %s" % (outcomes,))
        hosts = status_of(box)["hosts"]
        servers = [h for h in hosts if "dialog-server" in h["roles"]]
        facts["dialog_out"] = {"request": request["payload"], "servers": len(servers),
                               "healthy": sum(1 for h in servers if h["healthy"])}
        say("dialog servers: %(servers)d, healthy: %(healthy)d" % facts["dialog_out"])
        check(len(servers) == 5 and all(h["healthy"] for h in servers), "not 5 healthy")
        metrics.update(hosts)
        metrics.drive(hosts, "dialog-server", cpu=0.5)

        say("\n== driving one cassandra node's data disk to 85%")
        first = [h for h in hosts if "cassandra" in h["roles"]][:1]
        metrics.drive(first, "cassandra", disk=0.85)
        request, outcomes = poll_until_scaled(box, sensor, service, "cassandra", say)
        ok, scaled = outcomes[0]
        check(ok, "dialog.scale failed: %s" % scaled)
        output = scaled["output"]
        facts["cassandra_out"] = dict(request=request["payload"], before=output["before"],
                                      after=output["after"], added=output["added"],
                                      cleaned=output["cleaned"])
        say("cassandra %d -> %d, added %s, cleanup on %s" % (
            output["before"], output["after"], ", ".join(output["added"]),
            ", ".join(output["cleaned"])))
        metrics.drive(first, "cassandra", disk=0.3)
    finally:
        metrics.close()

    # Scale-in ships disabled in the rules; an operator runs it by hand.
    for role, wanted in (("dialog-server", 3), ("cassandra", 3)):
        say("\n== dialog.scale role=%s count=%d (by hand)" % (role, wanted))
        params = {"deployment": DEPLOYMENT, "role": role, "count": wanted}
        with contextlib.redirect_stdout(io.StringIO()):
            ok, scaled, _ = box.run("dialog.scale", params, progress=lambda line: None)
        failure = (scaled.get("output") or {}).get("failure")
        check(ok, "scale-in of %s failed: %s" % (role, failure))
        output = scaled["output"]
        say("%s %d -> %d, removed %s"
            % (role, output["before"], output["after"], ", ".join(output["removed"])))
        facts["dialog_in" if role == "dialog-server" else "cassandra_in"] = output
    state = status_of(box)
    facts["final"] = {"healthy": state["healthy"],
                      "dialog-server": count(state["hosts"], "dialog-server"),
                      "cassandra": count(state["hosts"], "cassandra")}
    table = summary({"deployment": DEPLOYMENT, "health": state["hosts"],
                     "endpoints": state["endpoints"]})
    say("\n" + table)
    return facts


def main(_argv):
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="dialog-autoscale-")
    status = 1
    with sandbox() as box:
        try:
            facts = scenario(box, workdir, say=lambda line: print(line, flush=True))
            status = 0 if facts["final"]["healthy"] else 1
        except ScenarioFailed as exc:
            print("FAILED: %s" % exc, file=sys.stderr)
        finally:
            with contextlib.redirect_stdout(io.StringIO()):
                box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT},
                        progress=lambda line: None)
            shutil.rmtree(workdir, ignore_errors=True)
    print("sandbox torn down")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
