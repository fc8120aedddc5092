from dialog_action import DialogAction, progress, reports_errors
from lib.deployment_record import set_postgres_primary, unknown_deployment
from lib.healing import postgres_failover
from lib.planner import validate_deployment_name


class PostgresPromoteAction(DialogAction):
    """dialog.postgres_promote: promote the Postgres standby and record it as the primary."""

    @reports_errors
    def run(self, deployment, host, profile=None):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record:
            raise unknown_deployment(self.action_service, deployment)
        settings = self.profile(profile or record.get("profile"))
        hosts = self.provider_hosts(settings, deployment)
        context = self.deployment_context(settings, deployment, hosts, inventory=hosts)
        return postgres_failover.promote(
            context, self.ssh_options(settings), host, record,
            lambda name: set_postgres_primary(self.action_service, deployment, name),
            progress=progress)
