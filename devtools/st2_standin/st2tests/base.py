"""Stand-in for the real StackStorm module of the same name (st2tests.base).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Only the pack test classes are provided (real st2 defines them in st2tests.actions,
st2tests.sensors, st2tests.action_aliases and st2tests.pack_resource and re-exports them here;
the DB / runner test cases for StackStorm's own test suite are left out).
"""

import glob
import inspect
import os
from unittest import TestCase

import yaml

from st2common.exceptions.content import ParseException
from st2common.models.api.action import ActionAliasAPI
from st2common.models.utils.action_alias_utils import extract_parameters
from st2common.models.utils.action_alias_utils import extract_parameters_for_action_alias_db
from st2common.runners.utils import get_action_class_instance
from st2tests.mocks.action import MockActionService
from st2tests.mocks.action import MockActionWrapper
from st2tests.mocks.sensor import MockSensorService
from st2tests.mocks.sensor import MockSensorWrapper

__all__ = ["BaseSensorTestCase", "BaseActionTestCase", "BaseActionAliasTestCase"]

# st2common.constants.pack.MANIFEST_FILE_NAME and st2common.constants.meta.ALLOWED_EXTS.
MANIFEST_FILE_NAME = "pack.yaml"
ALLOWED_EXTS = [".yaml", ".yml"]


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
    Base class for testing action aliases.

    Copied from StackStorm (st2tests/st2tests/action_aliases.py; Copyright 2020 The StackStorm
    Authors, Copyright 2019 Extreme Networks, Inc.; Apache License 2.0): the alias is loaded
    from the pack's aliases/ folder the way st2's AliasesRegistrar loads it (validated with
    ActionAliasAPI's schema: the setUp of a pack with an alias st2 would refuse fails), and
    commands are matched with the format parser copied into the stand-in's
    st2common.models.utils.action_alias_utils.
    """

    action_alias_name = None
    action_alias_db = None

    def setUp(self):
        super(BaseActionAliasTestCase, self).setUp()

        if not self.action_alias_name:
            raise ValueError('"action_alias_name" class attribute needs to be provided')

        self.action_alias_db = self._get_action_alias_db_by_name(name=self.action_alias_name)

    def assertCommandMatchesExactlyOneFormatString(self, format_strings, command):
        """
        Assert that the provided command matches exactly one format string from the provided list.
        """
        matched_format_strings = []

        for format_string in format_strings:
            try:
                extract_parameters(format_str=format_string, param_stream=command)
            except ParseException:
                continue

            matched_format_strings.append(format_string)

        if len(matched_format_strings) == 0:
            msg = 'Command "%s" didn\'t match any of the provided format strings' % (command)
            raise AssertionError(msg)
        elif len(matched_format_strings) > 1:
            msg = 'Command "%s" matched multiple format strings: %s' % (
                command,
                ", ".join(matched_format_strings),
            )
            raise AssertionError(msg)

    def assertExtractedParametersMatch(self, format_string, command, parameters):
        """
        Assert that the provided command matches the format string.

        In addition to that, also assert that the parameters which have been extracted from the
        user input (command) also match the provided parameters.
        """
        extracted_params = extract_parameters_for_action_alias_db(
            action_alias_db=self.action_alias_db, format_str=format_string, param_stream=command
        )

        if extracted_params != parameters:
            msg = (
                'Extracted parameters from command string "%s" against format string "%s"'
                " didn't match the provided parameters: " % (command, format_string)
            )

            # Intercepted so that the message includes the dictionaries' diff.
            try:
                self.assertEqual(extracted_params, parameters)
            except AssertionError as e:
                msg += str(e)

            raise AssertionError(msg)

    def _get_action_alias_db_by_name(self, name):
        """
        Retrieve ActionAlias DB object for the provided alias name.
        """
        base_pack_path = self._get_base_pack_path()
        pack_yaml_path = os.path.join(base_pack_path, MANIFEST_FILE_NAME)

        if os.path.isfile(pack_yaml_path):
            # 1. 1st try to infer pack name from pack metadata file
            pack_metadata = _load_meta(pack_yaml_path)
            pack = pack_metadata.get("ref") or pack_metadata["name"]
        else:
            # 2. If pack.yaml is not available, fail back to directory name
            _, pack = os.path.split(base_pack_path)

        aliases_path = os.path.join(base_pack_path, "aliases")
        aliases = sorted(path for ext in ALLOWED_EXTS
                         for path in glob.glob(os.path.join(aliases_path, "*" + ext)))
        for alias_path in aliases:
            action_alias_db = _get_action_alias_db(pack=pack, action_alias=alias_path)

            if action_alias_db.name == name:
                return action_alias_db

        raise ValueError('Alias with name "%s" not found' % (name))


def _load_meta(path):
    """st2common.content.loader.MetaLoader.load for a .yaml / .yml file."""
    with open(path, "r", encoding="utf-8") as fp:
        return yaml.safe_load(fp)


def _get_action_alias_db(pack, action_alias):
    """AliasesRegistrar._get_action_alias_db (st2common/st2common/bootstrap/aliasesregistrar.py):
    the file's content, its pack checked, validated with ActionAliasAPI's schema as st2 does
    when it registers the alias, and converted to the DB object.

    st2 also records metadata_file (inside tests it gives up when the pack is not under
    packs_base_paths, as here) and applies the operator's overrides from
    /opt/stackstorm/overrides (only "enabled" can be overridden); both are left out.
    """
    content = _load_meta(action_alias)
    pack_field = content.get("pack", None)
    if not pack_field:
        content["pack"] = pack
        pack_field = pack
    if pack_field != pack:
        raise Exception(
            'Model is in pack "%s" but field "pack" is different: %s' % (pack, pack_field)
        )

    action_alias_api = ActionAliasAPI(**content)
    action_alias_api.validate()
    action_alias_db = ActionAliasAPI.to_model(action_alias_api)

    return action_alias_db
