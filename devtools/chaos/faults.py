"""The four faults of the chaos run, and how each is injected in the sandbox.

* kill: SandboxHosts.kill ends every process of the host and removes its network, while the
  emulator still says the instance is running: a hung or partitioned machine, which only the
  health probes can see (the provider's state does not change);
* terminate: TerminateInstances at the emulator, as an operator's mistake or a retired
  instance; the hypervisor then removes the host, and the provider's state says so.
"""

import dataclasses
import typing

from lib.deployment_record import load_record, postgres_primary

import local_runner

KILL, TERMINATE = "kill", "terminate"


@dataclasses.dataclass
class Fault:
    name: str
    group: str
    how: str
    pick: typing.Callable  # (deployment, hosts, record) -> host name

    def host(self, deployment, hosts, record):
        return self.pick(deployment, hosts, record)  # pylint: disable=not-callable


def _in_group(hosts, group):
    return sorted((h for h in hosts if group in h["roles"]), key=lambda h: h["name"])


def _first(group):
    return lambda deployment, hosts, record: "%s-%s-1" % (deployment, group)


def _last(group):
    # The highest index: not a Cassandra seed (the first nodes are), and not the dialog server
    # the write probe runs on (the first).
    return lambda deployment, hosts, record: _in_group(hosts, group)[-1]["name"]


def _primary(deployment, hosts, record):
    return postgres_primary(record, hosts)


FAULTS = [
    Fault("proxy-1 killed", "proxy", KILL, _first("proxy")),
    Fault("postgres primary killed", "postgres", KILL, _primary),
    Fault("dialog server terminated", "dialog-server", TERMINATE, _last("dialog-server")),
    Fault("cassandra node terminated", "cassandra", TERMINATE, _last("cassandra")),
]


def pick_faults(names):
    """The FAULTS named (all when `names` is empty); ValueError naming the allowed ones."""
    if not names:
        return list(FAULTS)
    known = {"proxy": FAULTS[0], "postgres": FAULTS[1], "dialog-server": FAULTS[2],
             "cassandra": FAULTS[3]}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError("faults: unknown %s; allowed: %s"
                         % (", ".join(unknown), ", ".join(known)))
    return [known[n] for n in names]


def instance_of(ec2, deployment, host):
    """The id of the live instance tagged as the deployment's `host`."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:dialog:deployment", "Values": [deployment]},
        {"Name": "tag:Name", "Values": [host]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    ids = [i["InstanceId"] for page in pages for r in page.get("Reservations", [])
           for i in r.get("Instances", [])]
    if len(ids) != 1:
        raise RuntimeError("expected one live instance named %s, found %d" % (host, len(ids)))
    return ids[0]


def service_for(datastore):
    """The action service API (get_value ...) over the sandbox's datastore."""
    return local_runner.LocalActionService("dialog", "sandbox-chaos", datastore)


def inject(box, fault, deployment, hosts):
    """Inject `fault` into the running sandbox `box`; returns the faulted host's name."""
    record = load_record(service_for(box.datastore), deployment)
    host = fault.host(deployment, hosts, record)
    if fault.how == KILL:
        box.hosts.kill(host)
    else:
        ec2 = box.emulator.client("ec2")
        ec2.terminate_instances(InstanceIds=[instance_of(ec2, deployment, host)])
    return host
