"""The one StackStorm-facing base class of the pack's python actions.

Actions stay thin: they resolve the profile, call the plain-Python core and hand its result
back. Errors the core raises on purpose become a failed execution with a readable result
instead of a traceback.
"""

import functools

from st2common.runners.base_action import Action

from lib.errors import DialogError
from lib.profiles import resolve_profile


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


class DialogAction(Action):
    """Base of every python action of the dialog pack."""

    def profile(self, name=None):
        return resolve_profile(self.config, name)
