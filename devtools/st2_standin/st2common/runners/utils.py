"""Stand-in for the real StackStorm module of the same name (st2common.runners.utils).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Only the helpers that pack actions and st2tests rely on are reproduced.
"""

import logging
import os

__all__ = ["PackConfigDict", "get_logger_for_python_runner_action", "get_action_class_instance"]

# st2common.log.getLogger's prefix.
ST2_LOGGER_PREFIX = "st2."

# Default of cfg.CONF.system.base_path in StackStorm.
SYSTEM_BASE_PATH = "/opt/stackstorm"

CONFIG_MISSING_ITEM_ERROR = """
Config for pack "%s" is missing key "%s".
Make sure that the config file exists on disk (%s) and contains that key.

Also make sure you run "st2ctl reload --register-configs" when you add a
config and after every change you make to the config.
"""

LOGGERS = {}


class PackConfigDict(dict):
    """Pack config dict which raises a user-friendly ValueError for a missing key (as st2 does)."""

    def __init__(self, pack_name, *args):
        super(PackConfigDict, self).__init__(*args)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            return super(PackConfigDict, self).__getitem__(key)
        except KeyError:
            config_path = os.path.join(SYSTEM_BASE_PATH, "configs/", self._pack_name + ".yaml")
            raise ValueError(CONFIG_MISSING_ITEM_ERROR % (self._pack_name, key, config_path))


def get_logger_for_python_runner_action(action_name, log_level="debug"):
    """Logger "st2.actions.python.<action_name>" logging to stderr at the given level."""
    logger_name = "actions.python.%s" % (action_name)

    if logger_name not in LOGGERS:
        level = getattr(logging, log_level.upper(), logging.DEBUG)
        # st2 asks st2common.log.getLogger, which puts every logger under "st2.".
        logger = logging.getLogger(ST2_LOGGER_PREFIX + logger_name)
        console = logging.StreamHandler()
        console.setLevel(level)
        console.setFormatter(logging.Formatter("%(name)-12s: %(levelname)-8s %(message)s"))
        logger.addHandler(console)
        logger.setLevel(level)
        LOGGERS[logger_name] = logger

    return LOGGERS[logger_name]


def get_action_class_instance(action_cls, config=None, action_service=None):
    """Instantiate an action class, falling back to late action_service assignment as st2 does."""
    kwargs = {"config": config, "action_service": action_service}

    try:
        action_instance = action_cls(**kwargs)
    except TypeError as e:
        if "unexpected keyword argument 'action_service'" not in str(e):
            raise e

        action_service = kwargs.pop("action_service", None)
        action_instance = action_cls(**kwargs)
        action_instance.action_service = action_service

    return action_instance
