import os
import time

from dialog_action import DialogAction, progress, reports_errors
from lib import operation_lock
from lib.cloud.object_storage import FILES_KEY
from lib.deployment_record import forget_deployment
from lib.hosts.host_keys import KEY_TEMPLATE as HOST_KEYS_KEY, forget as forget_host_keys
from lib.errors import InputError
from lib.planner import validate_deployment_name
from lib.providers.base import summarize
from lib.tables import render_changes


class DestroyAction(DialogAction):
    """dialog.destroy: delete everything tagged with the deployment, after confirmation."""

    @reports_errors
    def run(self, deployment, confirm, provider=None, region=None, profile=None,
            dry_run=False, delete_data=False):
        validate_deployment_name(deployment)
        if confirm != deployment:
            raise InputError("confirm", "type the deployment name (%s) again to destroy it"
                             % deployment)
        if dry_run:
            return self._destroy(deployment, provider, region, profile, dry_run, delete_data)
        # One operation per deployment: a deploy or scale still running is not pulled from under
        # itself. The owner is this execution (st2's python runner sets the variable).
        owner = os.environ.get("ST2_ACTION_EXECUTION_ID") or "destroy-pid-%d" % os.getpid()
        operation_lock.acquire(self.action_service, deployment, owner, "destroy", time.time())
        try:
            with operation_lock.Renewer(self.action_service, deployment, owner, log=progress):
                return self._destroy(deployment, provider, region, profile, dry_run,
                                     delete_data)
        finally:
            operation_lock.release(self.action_service, deployment, owner)

    def _destroy(self, deployment, provider, region, profile, dry_run, delete_data):
        record = self.record(deployment)
        settings, provider, region = self.target(profile or record.get("profile"),
                                                 provider or record.get("provider"),
                                                 region or record.get("region"))
        driver = self.driver(settings, provider, region)
        changes = driver.destroy(deployment, dry_run=dry_run, delete_data=bool(delete_data))
        print(render_changes(changes, dry_run=dry_run))
        kept = list(driver.kept or [])
        for item in kept:
            print("kept: %s" % item)
        forgotten = []
        if not dry_run and provider != "static":
            # The data the secrets protect is gone with the volumes; a new deployment of the
            # same name gets new ones. Static hosts keep their data, so they keep their secrets.
            forgotten = forget_deployment(self.action_service, deployment)
            # New machines answer at these names next time: their host keys are new.
            if forget_host_keys(self.action_service, deployment):
                forgotten.append(HOST_KEYS_KEY % deployment)
            if delete_data and self.action_service.delete_value(FILES_KEY % deployment,
                                                                local=False):
                # The files bucket and its user went with the data: so does their key.
                forgotten.append(FILES_KEY % deployment)
            if forgotten:
                print("removed from the datastore: %s" % ", ".join(forgotten))
        return {"deployment": deployment, "provider": provider, "region": driver.region,
                "dry_run": dry_run, "changes": changes, "summary": summarize(changes),
                "forgotten": forgotten, "kept": kept}
