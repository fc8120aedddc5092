from dialog_action import DialogAction, progress, reports_errors
from lib import operations
from lib.deployment_record import unknown_deployment
from lib.planner import validate_deployment_name
from lib.scaling import check_role, scale_step


class ScalePrepareAction(DialogAction):
    """dialog.scale_prepare: check a scale request against the tier and the deployment's state
    (dialog.scale holds the deployment's operation lock meanwhile)."""

    @reports_errors
    def run(self, deployment, role, count=None, delta=None, profile=None, dry_run=False):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record:
            raise unknown_deployment(self.action_service, deployment)
        # Before any provider call: a mistyped role is answered at once.
        check_role(record["tier"], role, record.get("with_storage"))
        profile = profile or record.get("profile")
        settings, provider, region = self.target(profile, record.get("provider"),
                                                 record.get("region"))
        hosts = self.driver(settings, provider, region).inventory(deployment)
        step = scale_step(record["tier"], role, hosts, count=count, delta=delta,
                          with_storage=record.get("with_storage"))
        progress("%s: %s %d -> %d (%s)"
                 % (deployment, role, step["current"], step["desired"], step["direction"]))
        if step["direction"] != "none":
            context = self.deployment_context(settings, deployment, hosts, record["tier"],
                                              record.get("with_storage"), inventory=hosts)
            operations.scale_gate(context, self.ssh_options(settings), step, progress)
        keep = {k: record.get(k)
                for k in ("tier", "provider", "region", "with_storage", "droplet_class")}
        keep.update(provider=provider, region=region)
        survivors = [h for h in hosts if h["name"] not in step["leaving"]]
        older = [h["name"] for h in hosts if role in h["roles"]]
        proxies = [h["name"] for h in hosts if "proxy" in h["roles"]]
        return dict(step, deployment=deployment, profile=profile, hosts=hosts,
                    survivors=survivors, older=older, proxies=proxies,
                    dry_run=dry_run, **keep)
