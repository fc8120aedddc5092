"""The one StackStorm-facing base class of the pack's python actions.

Actions stay thin: they resolve the profile, call the plain-Python core and hand its result
back. Errors the core raises on purpose become a failed execution with a readable result
instead of a traceback; so do the exceptions the pack can foresee (SSH and connection errors,
provider client and HTTP errors, timeouts) that got past the code closest to them, named after
the host or deployment the action worked on. Anything else is a bug and keeps its traceback:
the workflows still report its last line (dialog.explain_failure).
"""

import functools
import time

from st2common.runners.base_action import Action

from lib import operation_lock
from lib.catalog import PROVIDERS, default_catalog
from lib.cloud.object_storage import files_settings
from lib.deployment_record import load_record
from lib.deployment_secrets import load_secrets
from lib.errors import DialogError, InputError
from lib.failures import foreseen_error, scrubber, secret_values
from lib.hosts.host_keys import HostKeyPins
from lib.hosts.inventory_check import check_hosts
from lib.hosts.ssh_path import resolve_via
from lib.hosts.docker_install import apt_repository
from lib.hosts.registry import registry_settings
from lib.planner import build_plan, choose, validate_region
from lib.profiles import resolve_profile
from lib.providers import open_provider


# Plan options whose value a deployment's record keeps: option -> server group.
RECORDED_COUNTS = {"dialog_servers": "dialog-server", "cassandra_nodes": "cassandra",
                   "storage_nodes": "storage"}


def reports_errors(run):
    """Wrap Action.run: (True, result) on success, (False, {"error": ...}) on a DialogError or
    a foreseeable exception (lib.failures.foreseen_error)."""

    @functools.wraps(run)
    def wrapper(self, *args, **kwargs):
        # Not a parameter of run(): the workflows' owner token of the deployment's lock.
        owner = kwargs.pop("lock_owner", None)
        try:
            return True, self.holding_lock(owner, _deployment(kwargs),
                                           lambda: run(self, *args, **kwargs))
        except DialogError as exc:
            self.logger.error("%s", exc)
            return False, exc.to_result()
        except Exception as exc:  # pylint: disable=broad-except
            error = foreseen_error(exc, _subject(kwargs), self.scrubber(kwargs.get("deployment")))
            if error is None:
                raise
            self.logger.error("%s", error)
            return False, error.to_result()

    return wrapper


def _deployment(params):
    deployment = params.get("deployment")
    if isinstance(params.get("plan"), dict):
        deployment = deployment or params["plan"].get("deployment")
    return deployment


def _subject(params):
    """What an action worked on, for an error: its host, else its deployment."""
    host, deployment = params.get("host"), _deployment(params)
    if host:
        return "%s (deployment %s)" % (host, deployment) if deployment else str(host)
    return "deployment %s" % (deployment or "dialog")


def progress(message):
    """Progress lines go to stdout as they happen: st2 streams them and keeps them."""
    print(message, flush=True)


class DialogAction(Action):
    """Base of every python action of the dialog pack."""

    def holding_lock(self, owner, deployment, call):
        """call(), as a step of the operation `owner` (an execution id) that holds the
        deployment's lock: refused at start when another operation holds it, the lock renewed
        while call() runs, and a failure when it was taken away meanwhile. No owner: call()."""
        if not owner or not deployment:
            return call()
        try:
            operation_lock.acquire(self.action_service, deployment, owner,
                                   "%s (taken back)" % type(self).__name__, time.time())
        except operation_lock.LockHeld as exc:
            raise InputError("deployment", "the operation this step belongs to (execution %s) "
                             "no longer holds the lock of %s: %s"
                             % (owner, deployment, operation_lock.describe(deployment,
                                                                           exc.holder))) from None
        with operation_lock.Renewer(self.action_service, deployment, owner,
                                    log=progress) as renewer:
            value = call()
        if renewer.lost:
            raise DialogError("%s: the operation (execution %s) lost the deployment's lock while "
                              "this step ran, so it stops here: %s"
                              % (deployment, owner, renewer.lost))
        return value

    def profile(self, name=None):
        return resolve_profile(self.config, name)

    def scrubber(self, deployment=None):
        """Masks the pack config's credentials and, when it has any, the deployment's secrets
        in a text from outside (an exception message, a remote command's output)."""
        secrets = {}
        if isinstance(deployment, str) and deployment:
            try:
                secrets = load_secrets(self.action_service, deployment)
            except Exception:  # pylint: disable=broad-except  # none yet, or no datastore
                secrets = {}
        return scrubber(secret_values(self.config, secrets))

    def target(self, profile_name, provider=None, region=None):
        """(profile, provider, region): explicit parameters first, then the profile's."""
        settings = self.profile(profile_name)
        provider = choose("provider", provider or settings.get("provider") or "aws",
                          list(PROVIDERS))
        if not region and settings.get("provider") == provider:
            region = settings.get("region")
        return settings, provider, validate_region(default_catalog(), provider, region)

    def plan(self, profile_name, tier, provider=None, region=None, admin_networks=None,
             **options):
        """Resolve the profile, then build the plan; returns (profile, plan)."""
        settings, provider, region = self.target(profile_name, provider, region)
        if admin_networks is None:
            admin_networks = settings.get("admin_networks")
        # Counts not given keep what the deployment has (a role grown by dialog.scale stays
        # grown when someone re-runs dialog.deploy), like an autoscaler-managed replica count.
        record = self.record(options.get("deployment") or "dialog")
        if record.get("tier") == tier:
            for option, group in RECORDED_COUNTS.items():
                if option == "storage_nodes" and not options.get("with_storage"):
                    continue
                if options.get(option) is None and (record.get("groups") or {}).get(group):
                    options[option] = record["groups"][group]
        options.setdefault("ssh_address", resolve_via(settings.get("ssh_address"), provider))
        # Prometheus opened to the StackStorm host's networks.
        options.setdefault("monitoring_networks", settings.get("monitoring_networks"))
        return settings, build_plan(tier, provider=provider, region=region,
                                    admin_networks=admin_networks, **options)

    def driver(self, settings, provider, region):
        return open_provider(provider, settings, region, progress=progress)

    def record(self, deployment):
        """What dialog.deploy remembered of the deployment ({} if it never ran for it)."""
        return load_record(self.action_service, deployment) or {}

    def deployment_context(self, settings, deployment, hosts, tier=None, with_storage=None,
                           files=False, inventory=None):
        """What the renderer needs to produce every host's files: secrets from the datastore,
        images from the profile, the deployment's hosts; the tier from the deployment's record
        when not given. files: also the files bucket and its key (provider calls: STS, IAM,
        Spaces), which only an action that uploads the dialog servers' server.conf needs;
        read-only actions (status, checks) must work without cloud credentials."""
        # Secrets go to these hosts' addresses: each must be the provider's, checked first.
        # `inventory`: the provider's list, when the caller has just read it (not asked twice).
        check_hosts(hosts, self.provider_hosts(settings, deployment) if inventory is None
                    else inventory, deployment)
        if tier is None:
            tier = self.record(deployment).get("tier")
        if tier is None:
            raise InputError("tier", "not known for deployment %r (it has no record in the "
                             "datastore); give it" % deployment, default_catalog().tier_names)
        if with_storage is None:
            with_storage = any("s3-gateway" in h["roles"] for h in hosts)
        self._context_deployment = deployment  # pylint: disable=attribute-defined-outside-init
        context = {"deployment": deployment, "tier": tier, "provider": settings.get("provider"),
                   "with_storage": bool(with_storage), "hosts": hosts,
                   "secrets": load_secrets(self.action_service, deployment),
                   "images": settings.get("images") or {},
                   # Which Postgres host renders as primary (lib.render.postgres_pair).
                   "postgres_primary": self.record(deployment).get("postgres_primary"),
                   # Never rendered: prepare_host hands it to registry.ensure_login only.
                   "registry": registry_settings(settings),
                   "docker_apt_repository": apt_repository(
                       settings.get("docker_apt_repository"))}
        # The bucket of uploaded files, None where files stay local.
        context["object_storage"] = self.files_storage(settings, deployment, hosts,
                                                       with_storage) if files else None
        return context

    def provider_hosts(self, settings, deployment):
        """The deployment's inventory at its provider (the record's provider and region, else
        the profile's)."""
        record = self.record(deployment)
        provider = record.get("provider") or settings.get("provider") or "aws"
        region = record.get("region") or (settings.get("region")
                                          if settings.get("provider") == provider else None)
        region = validate_region(default_catalog(), provider, region)
        return self.driver(settings, provider, region).inventory(deployment)

    def files_storage(self, settings, deployment, hosts, with_storage, create=False):
        """lib.cloud.object_storage.files_settings for the deployment's provider and region
        (create: make the bucket's key if none is kept; dialog.provision does, once)."""
        provider = settings.get("provider")
        if with_storage or len(hosts) <= 1 or (
                provider not in ("aws", "digitalocean") and not settings.get("object_storage")):
            return None
        record = self.record(deployment)
        provider = record.get("provider") or provider
        region = validate_region(default_catalog(), provider,
                                 record.get("region") or settings.get("region"))
        return files_settings(self.action_service, self.driver(settings, provider, region),
                              deployment, hosts, with_storage, create=create)

    @staticmethod
    def login_options(settings):
        """How the bootstrap logs in, from the profile (the key text is a secret)."""
        return {"user": settings.get("ssh_user") or None,  # None: each host's image user
                "key_file": settings.get("ssh_key_file"),
                "private_key_text": settings.get("ssh_private_key"),
                "via": resolve_via(settings.get("ssh_address"), settings.get("provider"))}

    def ssh_options(self, settings, deployment=None):
        """login_options() with the host keys to check: pinned per deployment
        (lib.hosts.host_keys), `deployment`, else the one whose context this action built
        last (every action that logs in to hosts builds one)."""
        deployment = deployment or getattr(self, "_context_deployment", None)
        return dict(self.login_options(settings),
                    host_keys=HostKeyPins(self.action_service, deployment,
                                          settings.get("known_hosts")) if deployment else None)
