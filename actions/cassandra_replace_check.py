from dialog_action import DialogAction, progress, reports_errors
from lib.cluster import cassandra_ops
from lib.deployment_record import unknown_deployment
from lib.errors import InputError
from lib.healing.cassandra_check import dead_address
from lib.operations import session
from lib.planner import validate_deployment_name
from lib.render import render_host
from lib.stages import hosts_with


class CassandraReplaceCheckAction(DialogAction):
    """dialog.cassandra_replace_check: before a lost Cassandra node is replaced, read the ring
    from another node: the lost node must be DN and every other node UN (never touch the ring
    while another node is not UN). Result: the lost node's address, for deploy's replacing."""

    @reports_errors
    def run(self, deployment, host, profile=None):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record:
            raise unknown_deployment(self.action_service, deployment)
        settings, provider, region = self.target(profile or record.get("profile"),
                                                 record.get("provider"), record.get("region"))
        inventory = self.driver(settings, provider, region).inventory(deployment)
        others = [h for h in hosts_with(inventory, "cassandra") if h["name"] != host]
        if not others:
            raise InputError("host", "%s has no other Cassandra node to read the ring from"
                             % deployment)
        context = self.deployment_context(settings, deployment, inventory, record["tier"],
                                          record.get("with_storage"), inventory=inventory)
        observer = others[0]
        with session(observer, self.ssh_options(settings), hosts=inventory) as connection:
            nodes = cassandra_ops.ring(connection, render_host(context, observer["name"]))
        address = dead_address(host, inventory, nodes)
        names = {h["private_address"]: h["name"] for h in hosts_with(inventory, "cassandra")}
        names.setdefault(address, host)
        checked = cassandra_ops.replace_gate(nodes, address, names)
        progress("%s: %s (%s) is DN, the %d other nodes UN, as %s sees the ring"
                 % (deployment, host, address, len(checked["others"]), observer["name"]))
        return {"deployment": deployment, "host": host, "old_address": address,
                "observer": observer["name"], "others": checked["others"]}
