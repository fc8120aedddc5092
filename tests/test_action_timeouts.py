"""Every python action's `timeout` covers the longest its own code may wait, with margin.

StackStorm's python runner kills an action when its `timeout` runs out (600 s unless the action
says otherwise) and reports "Action failed to complete in N seconds". The pack bounds every
wait itself and fails with a message that names what it waited for ("SSH not ready after 600s",
"did not become running within 600s"): that message is the one an operator must see, so no
action may be killed before its own bounds are spent.

The worst case of an action is every bounded wait on its longest path, at its bound, one after
another: driver waiters and polls, SSH readiness and logins, remote commands, health-check
deadlines, nodetool. A loop over several hosts or resources counts one pass: when one of them
is slow the cause (the network, the cloud API) is shared, and the rest of the loop fits the
margin. Every number comes from the code (constants, parameter defaults, or the timeout a call
passes, recorded); the paths are the model, kept honest by counting the drivers' wait sites.
The margin, for API round trips, process start and a poll's last attempt, is max(300 s, 10 %).
"""

import contextlib
import glob
import inspect
import math
import os

import pytest
import repair_gate
import yaml

from lib import bootstrap, health, operations
from lib.cloud import preflight
from lib.cluster import cassandra_ops
from lib.healing import postgres_failover
from lib.hosts import registry, ssh_path, volumes
from lib.providers import aws, base, digitalocean
from lib.render import PGBOUNCER_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_MARGIN = 300


def action_meta(name):
    with open(os.path.join(ROOT, "actions", name + ".yaml")) as fp:
        return yaml.safe_load(fp)


def python_actions():
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, "actions", "*.yaml"))):
        with open(path) as fp:
            meta = yaml.safe_load(fp) or {}
        if meta.get("runner_type") == "python-script":
            names.append(meta["name"])
    return names


def param_default(action, name):
    return action_meta(action)["parameters"][name]["default"]


def signature_default(func, name):
    return inspect.signature(func).parameters[name].default


def recorded_remote_timeouts(monkeypatch, call, out=""):
    """The timeout of every remote command call() runs (nothing is run)."""
    seen = []

    def remote(connection, command, stdin=None, timeout=None):
        seen.append(timeout)
        return 0, out, ""

    monkeypatch.setattr(health, "remote", remote)
    monkeypatch.setattr(health, "sudo_prefix", lambda connection: "")
    call()
    return seen


def recorded_wait_bound(monkeypatch, call):
    """The timeout call() hands base.wait_until (which returns at once here)."""
    seen = []

    def wait_until(check, timeout, interval, what, **kwargs):
        seen.append(timeout)
        return True

    monkeypatch.setattr(base, "wait_until", wait_until)
    call()
    [bound] = seen
    return bound


def recorded_pgbouncer_timeouts(monkeypatch):
    """The remote timeouts of one Postgres host's repoint (dialog.postgres_repoint) whose
    PgBouncer file changed: the files are uploaded (recorded apart), PgBouncer recreated."""
    rendered = {"host": "p-1", "project": "dialog", "compose_file": "/opt/dialog/compose.yaml",
                "files": []}

    @contextlib.contextmanager
    def session(host, ssh, **kwargs):
        yield object()

    monkeypatch.setattr(postgres_failover, "render_host", lambda context, name: rendered)
    monkeypatch.setattr(operations, "session", session)
    monkeypatch.setattr(bootstrap, "upload_changed",
                        lambda connection, files: ([PGBOUNCER_ENV[0]], []))
    return recorded_remote_timeouts(monkeypatch, lambda: postgres_failover._repoint_postgres_host(
        {"hosts": []}, {"name": "p-1"}, {}, lambda message: None))  # pylint: disable=W0212


@pytest.fixture
def bounds(monkeypatch):
    """Each wait's bound in seconds, from the code."""
    connect = signature_default(bootstrap.connect, "timeout")
    rendered = {"host": "c-1", "project": "dialog", "compose_file": "/opt/dialog/compose.yaml"}
    [ring] = recorded_remote_timeouts(monkeypatch,
                                      lambda: cassandra_ops.ring(object(), rendered))
    [df] = recorded_remote_timeouts(monkeypatch, lambda: cassandra_ops.free_bytes(object()),
                                    out="/dev/sda1 100 50 50 50% /var/lib/dialog")
    postgres = {"host": "p-1", "project": "dialog", "compose_file": "/opt/dialog/compose.yaml"}
    [compose_ps] = recorded_remote_timeouts(
        monkeypatch, lambda: postgres_failover.running_services(object(), postgres))
    [digest] = recorded_remote_timeouts(monkeypatch, lambda: postgres_failover._remote_digest(
        object(), "/opt/dialog/server.conf"))  # pylint: disable=protected-access
    [pgbouncer_up] = recorded_pgbouncer_timeouts(monkeypatch)
    aws_driver = aws.Driver(profile={}, region="us-east-1")
    do_wait = signature_default(digitalocean.Driver.__init__, "droplet_timeout")
    return {
        # paramiko gives the TCP connection, the banner and the login each the timeout, after
        # up to one timeout of handshakes sshd dropped (bootstrap.HandshakeDropped).
        "ssh_login": 4 * connect,
        # The same with the short step timeout a failover gives a host that may be dead.
        "ssh_login_short": 4 * postgres_failover.REACH_TIMEOUT,
        # dialog.move_address's probe of a candidate (or of the jump proxy before it): the TCP
        # connection and the banner each get the probe's timeout.
        "ssh_banner_probe": 2 * ssh_path.JUMP_PROBE_TIMEOUT,
        "compose_ps": compose_ps,
        "sha256sum": digest,
        "pgbouncer_recreate": pgbouncer_up,
        "postgres_ha": signature_default(postgres_failover.run_ha, "timeout"),
        "pg_promote": postgres_failover.PROMOTE_TIMEOUT,
        # run_checks: a probe with no deadline of its own gets SSH_MARGIN.
        "health_probe_once": health.SSH_MARGIN,
        "nodetool_ring": ring,
        "df": df,
        "nodetool_long": cassandra_ops.NODETOOL_TIMEOUT,
        "ring_watch": signature_default(cassandra_ops.decommission, "timeout"),
        "ring_watch_poll": signature_default(cassandra_ops.decommission, "interval"),
        "docker": bootstrap.DOCKER_TIMEOUT,
        "script": bootstrap.SCRIPT_TIMEOUT,
        "compose": bootstrap.COMPOSE_TIMEOUT,
        "aws_wait": aws.Driver.WAIT_DELAY * aws.Driver.WAIT_ATTEMPTS,
        "aws_fresh": recorded_wait_bound(monkeypatch, lambda: aws_driver._fresh(
            lambda **params: None)),  # pylint: disable=protected-access
        "do_wait": do_wait,
        # A DigitalOcean action (reserved IP assign, power_off) polled until completed.
        "do_action": digitalocean.Driver.ACTION_TIMEOUT,
        # preflight: per Dialog image a manifest HEAD, a token request and the HEAD again.
        "registry_probes": 3 * preflight.REGISTRY_TIMEOUT * sum(
            len(keys) for keys in preflight.ROLE_IMAGES.values()),
    }


def provision_waits(b):
    waits = {
        "aws": {"instances running": b["aws_wait"], "surplus addresses released": b["aws_wait"],
                "surplus instances terminated": b["aws_wait"],
                "surplus security groups free": b["aws_wait"],
                # The NAT gateway (private hosts' egress): a spare Elastic IP of an earlier
                # run released, then the private route waits for the gateway to be available.
                "spare NAT address released": b["aws_wait"],
                "NAT gateway available": b["aws_wait"],
                # new security groups, instances, addresses, the NAT gateway (its subnet and
                # Elastic IP just made), the public and the private default route (to a new
                # internet or NAT gateway): EC2 may not know the id yet
                "new resources known": 6 * b["aws_fresh"]},
        "digitalocean": {"surplus droplets gone": b["do_wait"],
                         "droplets active": b["do_wait"], "volumes attached": b["do_wait"]},
        "static": {},
    }
    for path in waits.values():
        path["preflight's registry probes"] = b["registry_probes"]
    return waits


def destroy_waits(b):
    return {
        "aws": {"addresses released": b["aws_wait"], "instances terminated": b["aws_wait"],
                "volumes free": b["aws_wait"], "security groups free": b["aws_wait"],
                # its Elastic IP is in use until the gateway is deleted, then released
                "NAT gateway deleted": b["aws_wait"], "NAT address released": b["aws_wait"],
                "subnet and VPC free": b["aws_wait"]},
        "digitalocean": {"droplets gone": b["do_wait"], "VPC without members": b["do_wait"]},
        "static": {},
    }


def replication_waits(b):
    """cassandra_ops.ensure_replication on a ring of three (RF 3 reached): a login per node,
    the ring read, per Dialog keyspace (the journal's two) its replication read and ALTER, and
    one full repair (a larger ring repairs on every node: see the README's long-running
    actions)."""
    return {"SSH logins (3 nodes)": 3 * b["ssh_login"], "nodetool status": b["nodetool_ring"],
            "cqlsh (2 keyspaces x 2 statements, and DESCRIBE)": 5 * cassandra_ops.CQL_TIMEOUT,
            "nodetool repair -full": b["nodetool_long"]}


def bootstrap_one_waits(b, ssh_wait, health_timeout, gated):
    """lib.operations.bootstrap_one on one host; gated (dialog.deploy's run): it logs in again
    after the wait for the hosts it needs."""
    path = {"SSH ready": ssh_wait, "SSH login": b["ssh_login"], "Docker installed": b["docker"],
            "data volume waited for and formatted": volumes.bound(1),
            "registry login": registry.LOGIN_TIMEOUT, "images pulled": registry.PULL_TIMEOUT,
            "TLS and files uploaded": 3 * b["script"]}
    if gated:
        path["SSH login again (after the dependency wait)"] = b["ssh_login"]
    path.update({"compose up": b["compose"], "health checks pass": health_timeout})
    return path


def failover_waits(b):
    """{action: {provider: path}} of the failover primitives. A static server is refused at
    once (nothing to stop or move at a provider), and so is retire_host on DigitalOcean."""
    return {
        "fence": {"aws": {"instance stopped": b["aws_wait"]},
                  # the power_off action completed, then the droplet listed as off
                  "digitalocean": {"power_off action completed": b["do_action"],
                                   "droplet off": b["do_wait"]}},
        # DeleteOnTermination off and the tags: single calls.
        "retire_host": {"aws": {"instance terminated": b["aws_wait"]}},
        # The candidates probed in index order (one pass); AssociateAddress is one call.
        "move_address": {"aws": {"candidate's SSH banner": b["ssh_banner_probe"]},
                         "digitalocean": {"candidate's SSH banner": b["ssh_banner_probe"],
                                          "assign action completed": b["do_action"]}},
    }


def longest(paths):
    return max(paths, key=lambda path: sum(path.values()))


def worst_cases(b):
    """{action: (seconds, {wait: seconds} on its longest path)}."""
    ssh_timeout = param_default("bootstrap_host", "ssh_timeout")
    # dialog.deploy hands its own health_timeout to every bootstrap_host.
    health_timeout = max(param_default("bootstrap_host", "health_timeout"),
                         param_default("deploy", "health_timeout"))
    paths = {
        "bootstrap_host": bootstrap_one_waits(b, ssh_timeout, health_timeout, gated=True),
        "cassandra_cleanup": dict(replication_waits(b), **{
            "SSH login": b["ssh_login"], "nodetool cleanup": b["nodetool_long"]}),
        # The ring read every JOIN_POLL s until the joiner is UN, join_timeout at most (each
        # read within it); the read that finds it past the bound: a login and nodetool status.
        "cassandra_join": {"joiner UN (join_timeout)": param_default("cassandra_join",
                                                                     "join_timeout"),
                           "last ring read": b["ssh_login"] + b["nodetool_ring"]},
        # The ring check (a deploy that changes the Cassandra count), then the owed cleanups:
        # one pass of cassandra_cleanup's path.
        "cassandra_settle": dict(replication_waits(b), **{
            "ring check": b["ssh_login"] + b["nodetool_ring"],
            "SSH login": b["ssh_login"], "nodetool cleanup": b["nodetool_long"]}),
        "cassandra_decommission": {"SSH logins (leaver, observer)": 2 * b["ssh_login"],
                                   "nodetool decommission": b["nodetool_long"],
                                   "ring without the leaver": b["ring_watch"],
                                   "last ring read": b["nodetool_ring"] + b["ring_watch_poll"]},
        "create_admin": dict(replication_waits(b), **{
            "SSH login": b["ssh_login"], "create user": b["script"]}),
        "status": {"SSH login": b["ssh_login"], "health probe": b["health_probe_once"]},
        # scale-in: dialog servers checked like status, or the Cassandra decommission check.
        "scale_prepare": longest(
            ({"SSH login": b["ssh_login"], "health probe": b["health_probe_once"]},
             {"SSH login": b["ssh_login"], "nodetool status": b["nodetool_ring"],
              "df": b["df"]})),
        # allow_removal: the dialog servers checked like status, then the decommission check.
        "removals": {"SSH login": b["ssh_login"], "health probe": b["health_probe_once"],
                     "SSH login (a Cassandra survivor)": b["ssh_login"],
                     "nodetool status": b["nodetool_ring"], "df": b["df"]},
        "provision": longest(provision_waits(b).values()),
        "destroy": longest(destroy_waits(b).values()),
        # Provider reads, the datastore and the catalog only.
        "preflight": {"registry probes": b["registry_probes"]},
        "inventory": {}, "plan": {}, "bootstrap_order": {}, "register_deployment": {},
        "lock": {}, "unlock": {}, "explain_failure": {},
        # The deployment record read and written once (the datastore).
        "record_scaled": {},
        "fence": longest(failover_waits(b)["fence"].values()),
        "retire_host": longest(failover_waits(b)["retire_host"].values()),
        "move_address": longest(failover_waits(b)["move_address"].values()),
        # The recorded primary checked (a short login, compose ps) unless the provider says it
        # is stopped, then the standby's state read and pg_promote.
        "postgres_promote": {"SSH login (the recorded primary, short)": b["ssh_login_short"],
                             "its compose ps": b["compose_ps"],
                             "SSH login (the standby)": b["ssh_login"],
                             "postgres_ha.sh state": b["postgres_ha"],
                             "pg_promote": b["pg_promote"]},
        # One pass over the Postgres hosts (a standby: files uploaded, PgBouncer recreated; the
        # primary: also its postgres, and its checks), then over the
        # dialog servers: server.conf's digest read, and a changed one restarted by
        # operations.bootstrap_one (its own SSH wait, not gated) within health_timeout.
        "postgres_repoint": dict({
            "Postgres host: SSH login (short)": b["ssh_login_short"],
            "Postgres host: files read and uploaded": 2 * b["script"],
            "Postgres host: pgbouncer recreated": b["pgbouncer_recreate"],
            # The primary's pass: its own login and upload, postgres and pgbouncer recreated
            # and its checks waited for within health_timeout.
            "the primary: SSH login (short)": b["ssh_login_short"],
            "the primary: files read and uploaded": 2 * b["script"],
            "the primary: postgres and pgbouncer recreated":
                postgres_failover.PRIMARY_RECREATE_TIMEOUT,
            "the primary: checks pass": param_default("postgres_repoint", "health_timeout"),
            "dialog server: SSH login (short)": b["ssh_login_short"],
            "dialog server: server.conf digest": b["sha256sum"]}, **{
                "dialog server restart: " + wait: seconds
                for wait, seconds in bootstrap_one_waits(
                    b, signature_default(operations.bootstrap_one, "ssh_wait"),
                    param_default("postgres_repoint", "health_timeout"), gated=False).items()}),
        # The ring read from another Cassandra node.
        "cassandra_replace_check": {"SSH login": b["ssh_login"],
                                    "nodetool status": b["nodetool_ring"]},
        # The datastore, and the gate's wait for faults reported in the same poll (the
        # pack config's healing.overlap_settle).
        "repair_gate": {"overlap settle": repair_gate.healing_settings({})[1]},
        "repair_done": {}, "repair_note": {}, "repair_reset": {},
    }
    return {name: (sum(path.values()), path) for name, path in paths.items()}


def test_every_python_actions_timeout_covers_its_worst_case_with_margin(bounds):
    assert sorted(worst_cases(bounds)) == python_actions()  # a new action needs its model
    too_short = []
    for name, (worst, path) in sorted(worst_cases(bounds).items()):
        timeout = param_default(name, "timeout")  # declared by every python action
        needed = worst + max(MIN_MARGIN, math.ceil(worst / 10))
        if timeout < needed:
            too_short.append("%s: timeout %s < %d (%s)" % (name, timeout, needed, ", ".join(
                "%s %gs" % item for item in path.items())))
    assert not too_short, "\n".join(too_short)


@pytest.mark.parametrize("driver, sites", [
    # _wait: instances running, terminated (surplus), stopped (fence), terminated (retire).
    (aws.Driver, {"self._fresh(": 5, "self._wait(": 4, "self._until_free(": 5,
                  "self._wait_nat(": 2}),
    # _wait: VPC without members, volumes attached, an action completed (move_address,
    # fence), the droplet off (fence); and inside _wait_gone and _wait_active.
    (digitalocean.Driver, {"self._wait(": 6, "self._wait_gone(": 2, "self._wait_active(": 1}),
])
def test_the_model_knows_every_wait_of_the_drivers(driver, sites):
    """A wait added to (or removed from) a driver changes these counts: then revisit
    provision_waits, destroy_waits and failover_waits above, and the timeouts of provision,
    destroy, fence, retire_host and move_address."""
    source = inspect.getsource(driver)
    assert {site: source.count(site) for site in sites} == sites


def test_the_long_actions_are_the_ones_the_readme_lists(bounds):
    with open(os.path.join(ROOT, "README.md")) as fp:
        readme = fp.read()
    section = readme.split("### Long-running actions", 1)[1].split("\n#", 1)[0]
    default = 600  # the python runner's own
    for name in python_actions():
        timeout = param_default(name, "timeout")
        listed = "`dialog.%s`" % name in section
        assert listed == (timeout > default), name
        if listed:
            assert "%d s" % timeout in section.split("`dialog.%s`" % name, 1)[1].split("\n")[0]
