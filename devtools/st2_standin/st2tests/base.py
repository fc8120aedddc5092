"""Stand-in for the real StackStorm module of the same name (st2tests.base).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Only the pack test classes are provided (real st2 defines them in st2tests.actions,
st2tests.sensors, st2tests.action_aliases and st2tests.pack_resource and re-exports them here;
the DB / runner test cases for StackStorm's own test suite are left out).
"""

import inspect
import os
from unittest import TestCase

from st2common.runners.utils import get_action_class_instance
from st2tests.mocks.action import MockActionService
from st2tests.mocks.action import MockActionWrapper
from st2tests.mocks.sensor import MockSensorService
from st2tests.mocks.sensor import MockSensorWrapper

__all__ = ["BaseSensorTestCase", "BaseActionTestCase", "BaseActionAliasTestCase"]

ALIAS_TODO = "alias matching stand-in arrives with the ChatOps issue"


class BasePackResourceTestCase(TestCase):
    """
    Base test class for all the pack resource test classes.
    """

    def get_fixture_content(self, fixture_path):
        """Return raw content of a file relative to the pack's tests/fixtures/ directory."""
        fixtures_path = os.path.join(self._get_base_pack_path(), "tests/fixtures/")
        with open(os.path.join(fixtures_path, fixture_path), "r") as fp:
            return fp.read()

    def _get_base_pack_path(self):
        test_file_path = inspect.getfile(self.__class__)
        return os.path.abspath(os.path.join(os.path.dirname(test_file_path), ".."))


class BaseActionTestCase(BasePackResourceTestCase):
    """
    Base class for Python runner action tests.
    """

    action_cls = None

    def setUp(self):
        super(BaseActionTestCase, self).setUp()

        class_name = self.action_cls.__name__
        # Note: st2 uses pack="tests" here, not the pack's real name.
        action_wrapper = MockActionWrapper(pack="tests", class_name=class_name)
        self.action_service = MockActionService(action_wrapper=action_wrapper)

    def get_action_instance(self, config=None):
        """
        Retrieve instance of the action class.
        """
        return get_action_class_instance(
            action_cls=self.action_cls, config=config, action_service=self.action_service
        )


class BaseSensorTestCase(BasePackResourceTestCase):
    """
    Base class for sensor tests.
    """

    sensor_cls = None

    def setUp(self):
        super(BaseSensorTestCase, self).setUp()

        class_name = self.sensor_cls.__name__
        sensor_wrapper = MockSensorWrapper(pack="tests", class_name=class_name)
        self.sensor_service = MockSensorService(sensor_wrapper=sensor_wrapper)

    def get_sensor_instance(self, config=None, poll_interval=None):
        """
        Retrieve instance of the sensor class.
        """
        kwargs = {"sensor_service": self.sensor_service}

        if config:
            kwargs["config"] = config

        if poll_interval is not None:
            kwargs["poll_interval"] = poll_interval

        return self.sensor_cls(**kwargs)  # pylint: disable=not-callable

    def get_dispatched_triggers(self):
        return self.sensor_service.dispatched_triggers

    def get_last_dispatched_trigger(self):
        return self.sensor_service.dispatched_triggers[-1]

    def assertTriggerDispatched(self, trigger, payload=None, trace_context=None):
        """
        Assert that the trigger with the provided values has been dispatched. A falsy payload /
        trace_context is not compared (as in st2).
        """
        for item in self.get_dispatched_triggers():
            trigger_matches = item["trigger"] == trigger
            payload_matches = item["payload"] == payload if payload else True
            if trace_context:
                trace_context_matches = item["trace_context"] == trace_context
            else:
                trace_context_matches = True

            if trigger_matches and payload_matches and trace_context_matches:
                return True

        raise AssertionError('Trigger "%s" hasn\'t been dispatched' % (trigger))


class BaseActionAliasTestCase(BasePackResourceTestCase):
    """
    Base class for testing action aliases. Placeholder in the stand-in: alias format matching
    (st2common.models.utils.action_alias_utils) is not ported yet, so alias tests fail loudly.
    """

    action_alias_name = None
    action_alias_db = None

    def setUp(self):
        super(BaseActionAliasTestCase, self).setUp()
        raise NotImplementedError(ALIAS_TODO)

    def assertCommandMatchesExactlyOneFormatString(self, format_strings, command):
        raise NotImplementedError(ALIAS_TODO)

    def assertExtractedParametersMatch(self, format_string, command, parameters):
        raise NotImplementedError(ALIAS_TODO)
