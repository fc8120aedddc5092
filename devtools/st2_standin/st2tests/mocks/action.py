"""Stand-in for the real StackStorm module of the same name (st2tests.mocks.action).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""

from logging import RootLogger
from unittest.mock import Mock

from st2tests.mocks.datastore import DatastoreServiceMethods
from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["MockActionWrapper", "MockActionService"]


class MockActionWrapper(object):
    def __init__(self, pack, class_name):
        self._pack = pack
        self._class_name = class_name


class MockActionService(DatastoreServiceMethods):
    """
    Mock ActionService for use in testing.
    """

    def __init__(self, action_wrapper):
        self._action_wrapper = action_wrapper

        # A Mock so tests can assert the logger was called with particular arguments
        self._logger = Mock(spec=RootLogger)

        self._datastore_service = MockDatastoreService(
            logger=self._logger,
            pack_name=self._action_wrapper._pack,
            class_name=self._action_wrapper._class_name,
        )

    @property
    def datastore_service(self):
        return self._datastore_service
