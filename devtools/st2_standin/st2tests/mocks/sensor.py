"""Stand-in for the real StackStorm module of the same name (st2tests.mocks.sensor).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""

from logging import RootLogger
from unittest.mock import Mock

from st2tests.mocks.datastore import DatastoreServiceMethods
from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["MockSensorWrapper", "MockSensorService"]


class TraceContext(object):
    """Minimal stand-in for st2common.models.api.trace.TraceContext (no __eq__, as in st2)."""

    def __init__(self, id_=None, trace_tag=None):
        self.id_ = id_
        self.trace_tag = trace_tag

    def __str__(self):
        return "{id_: %s, trace_tag: %s}" % (self.id_, self.trace_tag)


class MockSensorWrapper(object):
    def __init__(self, pack, class_name):
        self._pack = pack
        self._class_name = class_name


class MockSensorService(DatastoreServiceMethods):
    """
    Mock SensorService for use in testing.
    """

    def __init__(self, sensor_wrapper):
        self._sensor_wrapper = sensor_wrapper

        # A Mock so tests can assert the logger was called with particular arguments
        self._logger = Mock(spec=RootLogger)

        # Holds a list of triggers which were dispatched
        self.dispatched_triggers = []

        self._datastore_service = MockDatastoreService(
            logger=self._logger,
            pack_name=self._sensor_wrapper._pack,
            class_name=self._sensor_wrapper._class_name,
        )

    @property
    def datastore_service(self):
        return self._datastore_service

    def get_logger(self, name):
        """Return the mock logger instance (a Mock, so calls can be asserted)."""
        return self._logger

    def dispatch(self, trigger, payload=None, trace_tag=None):
        trace_context = TraceContext(trace_tag=trace_tag) if trace_tag else None
        return self.dispatch_with_context(
            trigger=trigger, payload=payload, trace_context=trace_context
        )

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        item = {"trigger": trigger, "payload": payload, "trace_context": trace_context}
        self.dispatched_triggers.append(item)
        return item
