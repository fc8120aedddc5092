from dialog_action import DialogAction, reports_errors
from lib.deployment_record import record_key, record_of, save_record
from lib.deployment_secrets import datastore_key, ensure_secrets


class RegisterDeploymentAction(DialogAction):
    """dialog.register_deployment: remember the deployment and make sure its secrets exist."""

    @reports_errors
    def run(self, plan, profile=None):
        deployment = plan["deployment"]
        _, created = ensure_secrets(self.action_service, deployment)
        recorded = save_record(self.action_service, record_of(plan, profile))
        print("deployment %s: %s; secrets %s (datastore key %s)" % (
            deployment, "record updated" if recorded else "record unchanged",
            "generated: " + ", ".join(created) if created else "all present",
            datastore_key(deployment)))
        return {"deployment": deployment, "datastore_key": datastore_key(deployment),
                "record_key": record_key(deployment), "secrets_created": created,
                "record_changed": recorded}
