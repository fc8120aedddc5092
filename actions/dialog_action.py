"""The one StackStorm-facing base class of the pack's python actions.

Actions stay thin: they resolve the profile, call the plain-Python core and hand its result
back. Errors the core raises on purpose become a failed execution with a readable result
instead of a traceback.
"""

import functools

from st2common.runners.base_action import Action

from lib.catalog import PROVIDERS, default_catalog
from lib.errors import DialogError
from lib.planner import build_plan, choose, validate_region
from lib.profiles import resolve_profile
from lib.providers import open_provider


def reports_errors(run):
    """Wrap Action.run: (True, result) on success, (False, {"error": ...}) on a DialogError."""

    @functools.wraps(run)
    def wrapper(self, *args, **kwargs):
        try:
            return True, run(self, *args, **kwargs)
        except DialogError as exc:
            self.logger.error("%s", exc)
            return False, exc.to_result()

    return wrapper


def progress(message):
    """Progress lines go to stdout as they happen: st2 streams them and keeps them."""
    print(message, flush=True)


class DialogAction(Action):
    """Base of every python action of the dialog pack."""

    def profile(self, name=None):
        return resolve_profile(self.config, name)

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
        return settings, build_plan(tier, provider=provider, region=region,
                                    admin_networks=admin_networks, **options)

    def driver(self, settings, provider, region):
        return open_provider(provider, settings, region, progress=progress)
