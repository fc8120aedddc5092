from dialog_action import DialogAction, progress, reports_errors
from lib.deployment_record import unknown_deployment
from lib.healing import postgres_failover
from lib.planner import validate_deployment_name


class PostgresRepointAction(DialogAction):
    """dialog.postgres_repoint: every PgBouncer and dialog server to the recorded primary."""

    @reports_errors
    def run(self, deployment, profile=None, health_timeout=300):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record:
            raise unknown_deployment(self.action_service, deployment)
        settings = self.profile(profile or record.get("profile"))
        hosts = self.provider_hosts(settings, deployment)
        context = self.deployment_context(settings, deployment, hosts, inventory=hosts,
                                          files=True)
        return postgres_failover.repoint(context, self.ssh_options(settings), progress=progress,
                                         health_timeout=health_timeout)
