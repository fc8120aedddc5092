from dialog_action import DialogAction, progress, reports_errors
from lib import operations, pending_cleanup
from lib.errors import InputError
from lib.planner import validate_deployment_name


def planned_cassandra(plan):
    return sum(1 for h in (plan or {}).get("hosts") or () if "cassandra" in h.get("roles", ()))


class CassandraSettleAction(DialogAction):
    """dialog.cassandra_settle: before a deploy or scale changes anything, finish the cleanups an
    earlier scale-out left owed, and, when `plan` changes the number of Cassandra nodes,
    require every node UN (never a join beside one still streaming, down or leaving)."""

    @reports_errors
    def run(self, deployment, profile=None, plan=None, replacing=None):
        validate_deployment_name(deployment)
        owed = pending_cleanup.pending(self.action_service, deployment)
        record = self.record(deployment)
        result = {"deployment": deployment, "owed": owed, "cleaned": [], "ring": None}
        if not record:
            return result  # a first deploy: no ring yet, nothing owed
        settings, provider, region = self.target(profile or record.get("profile"),
                                                 record.get("provider"), record.get("region"))
        hosts = self.driver(settings, provider, region).inventory(deployment)
        current = sum(1 for h in hosts if "cassandra" in h["roles"])
        changes = plan is not None and current and planned_cassandra(plan) != current
        if not owed and not changes:
            return result
        context = self.deployment_context(settings, deployment, hosts, record.get("tier"),
                                          record.get("with_storage"), inventory=hosts)
        ssh = self.ssh_options(settings)
        if changes and replacing:
            # The retired host comes back as the replacement of its dead address: the ring
            # must have that address DN and every other node UN, and nothing else may join.
            absent = [name for name in replacing if name not in {h["name"] for h in hosts}]
            if planned_cassandra(plan) != current + len(absent):
                raise InputError("replacing", "a replacement only brings back its retired host; "
                                 "this plan also changes the Cassandra count (%d -> %d): one "
                                 "topology change at a time" % (current + len(absent),
                                                                planned_cassandra(plan)))
            ring = operations.cassandra_replace_ring(context, ssh, replacing)
            result["ring"] = "%d other nodes UN, replacing %s" % (
                len(ring), ", ".join("%s (%s)" % i for i in sorted(replacing.items())))
            progress("cassandra ring: %s" % result["ring"])
        elif changes:
            ring = operations.cassandra_ring_normal(
                context, ssh, "the deploy changes no cassandra count (%d -> %d)"
                % (current, planned_cassandra(plan)))
            result["ring"] = "%d nodes, all UN" % len(ring)
            progress("cassandra ring: %s" % result["ring"])
        result["cleaned"] = operations.finish_cleanups(
            context, ssh, owed, lambda name: pending_cleanup.done(self.action_service,
                                                                  deployment, name), progress)
        return result
