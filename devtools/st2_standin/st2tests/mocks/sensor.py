"""Stand-in for the real StackStorm module of the same name (st2tests.mocks.sensor).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.

Its MockSensorService is stricter than st2tests' own on purpose: it validates every dispatched
payload the way the production sensor service does (see MockSensorService.dispatch_with_context)
and drops what StackStorm would drop. The validation follows StackStorm's
st2common/services/trigger_dispatcher.py and st2common/validators/api/reactor.py (Copyright 2020
The StackStorm Authors, Copyright 2019 Extreme Networks, Inc.; Apache License 2.0).
"""

import glob
import os
from logging import RootLogger
from unittest.mock import Mock

import yaml

from st2common.util import schema as util_schema
from st2tests.mocks.datastore import DatastoreServiceMethods
from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["MockSensorWrapper", "MockSensorService"]

MANIFEST_FILE_NAME = "pack.yaml"  # st2common.constants.pack.MANIFEST_FILE_NAME
ALLOWED_EXTS = [".yaml", ".yml"]  # st2common.constants.meta.ALLOWED_EXTS


def _pack_root():
    """The pack this stand-in ships in: the only pack whose trigger types it knows (st2 knows
    those of every pack registered with `st2ctl reload --register-sensors`)."""
    path = os.path.dirname(os.path.abspath(__file__))
    while os.path.dirname(path) != path:
        if os.path.isfile(os.path.join(path, MANIFEST_FILE_NAME)):
            return path
        path = os.path.dirname(path)
    return None


def load_trigger_types(pack_root=None):
    """{"<pack>.<name>": trigger type} of the pack's sensors/*.yaml, as st2's SensorsRegistrar
    registers them (pack ref from pack.yaml, each sensor's `trigger_types` under that pack)."""
    pack_root = pack_root or _pack_root()
    if not pack_root:
        return {}
    with open(os.path.join(pack_root, MANIFEST_FILE_NAME)) as fp:
        manifest = yaml.safe_load(fp) or {}
    pack = manifest.get("ref") or manifest.get("name")
    trigger_types = {}
    for ext in ALLOWED_EXTS:
        for path in sorted(glob.glob(os.path.join(pack_root, "sensors", "*" + ext))):
            with open(path) as fp:
                content = yaml.safe_load(fp) or {}
            for trigger_type in content.get("trigger_types") or []:
                trigger_types["%s.%s" % (pack, trigger_type["name"])] = dict(
                    trigger_type, pack=pack)
    return trigger_types


def validate_trigger_payload(trigger_types, trigger_type_ref, payload):
    """st2common.validators.api.reactor.validate_trigger_payload with
    throw_on_inexistent_trigger=True and [system] validate_trigger_payload = True (the
    default). Return the cleaned payload, or None when the trigger type has no payload_schema.

    Stricter than st2, which also knows its system triggers and looks TriggerDB references up in
    its database: here only the pack's own trigger types exist."""
    if not trigger_type_ref:
        return None

    if isinstance(trigger_type_ref, dict):
        trigger_type_ref = trigger_type_ref.get("type", None)

    trigger_type = trigger_types.get(trigger_type_ref) if trigger_type_ref else None
    if not trigger_type:
        raise ValueError(
            'Trigger type with reference "%s" doesn\'t exist in the database' % (trigger_type_ref)
        )

    payload_schema = trigger_type.get("payload_schema") or {}
    if not payload_schema:
        return None

    return util_schema.validate(
        instance=payload,
        schema=payload_schema,
        cls=util_schema.CustomValidator,
        use_default=True,
        allow_default_none=True,
    )


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

    Stricter than st2tests' MockSensorService on purpose, because production validates: like
    st2's sensor service (TriggerDispatcherService.dispatch_with_context with the default
    `[system] validate_trigger_payload = True`), a payload is validated against its trigger
    type's payload_schema in StackStorm's schema dialect (st2common.util.schema.CustomValidator)
    and a payload that fails, or a trigger type that is not registered, is logged as a warning
    and dropped: it never reaches dispatched_triggers, as it would never reach a rule.
    """

    def __init__(self, sensor_wrapper):
        self._sensor_wrapper = sensor_wrapper

        # A Mock so tests can assert the logger was called with particular arguments
        self._logger = Mock(spec=RootLogger)

        # Holds a list of triggers which were dispatched
        self.dispatched_triggers = []

        # Registered trigger types, read at the first dispatch.
        self._trigger_types = None

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
        if self._trigger_types is None:
            self._trigger_types = load_trigger_types()
        try:
            validate_trigger_payload(self._trigger_types, trigger, payload)
        except Exception as e:  # pylint: disable=broad-except
            # st2 catches (ValidationError, ValueError, Exception) here, SchemaError included.
            self._logger.warning(
                'Failed to validate payload (%s) for trigger "%s": %s'
                % (str(payload), trigger, str(e))
            )
            self._logger.warning(
                "Trigger payload validation failed and validation is enabled, not "
                'dispatching a trigger "%s" (%s): %s' % (trigger, str(payload), str(e))
            )
            return None

        # st2 dispatches the payload as given, not the cleaned copy validation returns.
        item = {"trigger": trigger, "payload": payload, "trace_context": trace_context}
        self.dispatched_triggers.append(item)
        return item
