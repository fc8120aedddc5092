"""Stand-in for the real StackStorm module of the same name (st2common.runners.base_action).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""

import abc

from st2common.runners.utils import PackConfigDict
from st2common.runners.utils import get_logger_for_python_runner_action

__all__ = ["Action"]


class Action(object, metaclass=abc.ABCMeta):
    """
    Base action class other Python actions should inherit from.
    """

    description = None

    def __init__(self, config=None, action_service=None):
        self.config = config or {}
        self.action_service = action_service

        if action_service and getattr(action_service, "_action_wrapper", None):
            log_level = getattr(action_service._action_wrapper, "_log_level", "debug")
            pack_name = getattr(action_service._action_wrapper, "_pack", "unknown")
        else:
            log_level = "debug"
            pack_name = "unknown"

        self.config = PackConfigDict(pack_name, self.config)
        self.logger = get_logger_for_python_runner_action(
            action_name=self.__class__.__name__, log_level=log_level
        )

    @abc.abstractmethod
    def run(self, **kwargs):
        pass
