"""Tests for devtools/local_runner.py (against a throwaway pack) and devtools/st2_standin."""

import importlib.util
import json
import os
import sys
import textwrap

import pytest
from st2reactor.sensor.base import PollingSensor
from st2common.runners.base_action import Action
from st2tests.base import BaseActionTestCase, BaseSensorTestCase

RUNNER_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "devtools", "local_runner.py")
_spec = importlib.util.spec_from_file_location("local_runner", RUNNER_PATH)
local_runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_runner)

ECHO_YAML = """
name: echo
runner_type: python-script
description: Echo the parameters back.
entry_point: echo.py
enabled: true
parameters:
  text: {type: string, required: true}
  count: {type: integer, default: 1}
  ratio: {type: number}
  loud: {type: boolean, default: false}
  tags: {type: array}
  extra: {type: object}
  color: {type: string, enum: [red, green], default: red}
  mode: {type: string, default: fixed, immutable: true}
  outcome: {type: string, enum: [ok, fail, raise, weird], default: ok}
"""

ECHO_PY = '''
from st2common.runners.base_action import Action


class EchoAction(Action):
    def run(self, **kwargs):
        print("hello from echo")
        if kwargs["outcome"] == "fail":
            return (False, {"why": "asked to fail"})
        if kwargs["outcome"] == "raise":
            raise RuntimeError("boom")
        if kwargs["outcome"] == "weird":
            return ("yes", 1)
        self.action_service.set_value("last", kwargs["text"])
        return {"params": kwargs, "config": dict(self.config),
                "stored": self.action_service.get_value("last")}
'''

CONFIG_SCHEMA = """
api_url: {type: string, default: "http://localhost"}
retries: {type: integer, default: 3}
token: {type: string, required: true, secret: true}
"""


@pytest.fixture
def pack(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the runner extends sys.path
    (tmp_path / "actions").mkdir()
    (tmp_path / "pack.yaml").write_text("ref: dialog\nname: dialog\nversion: 0.1.0\n")
    (tmp_path / "actions" / "echo.yaml").write_text(ECHO_YAML)
    (tmp_path / "actions" / "echo.py").write_text(ECHO_PY)
    (tmp_path / "actions" / "flow.yaml").write_text(
        "name: flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\n")
    (tmp_path / "config.schema.yaml").write_text(CONFIG_SCHEMA)
    return tmp_path


def run_cli(pack, capsys, *argv):
    code = local_runner.main(["run", "dialog.echo"] + list(argv), pack_root=str(pack))
    out, err = capsys.readouterr()
    result = None
    if "result:\n" in out:
        result = json.loads(textwrap.dedent(out.split("result:\n", 1)[1]))
    return code, out, err, result


def test_cast_cli_parameters_per_type():
    schemas = local_runner.parameter_schemas(
        {"name": "x", "parameters": {"i": {"type": "integer"}, "n": {"type": "number"},
                                     "b": {"type": "boolean"}, "a": {"type": "array"},
                                     "o": {"type": "object"}, "s": {"type": "string"}}})
    cast = local_runner.cast_cli_parameters
    assert cast(["i=42", "n=1.5", "b=true", "s=007"], schemas) == {
        "i": 42, "n": 1.5, "b": True, "s": "007"}
    assert cast(["b=False"], schemas) == {"b": False}
    assert cast(["a=x, y,z"], schemas) == {"a": ["x", "y", "z"]}
    assert cast(['a=[1, "two"]'], schemas) == {"a": [1, "two"]}
    assert cast(["a=5"], schemas) == {"a": [5]}
    assert cast(["a=x", "a=y"], schemas) == {"a": ["x", "y"]}
    assert cast(['o={"k": [1]}'], schemas) == {"o": {"k": [1]}}
    assert cast(["o=k1=v1,k2=v2"], schemas) == {"o": {"k1": "v1", "k2": "v2"}}
    assert cast(["timeout=30"], schemas) == {"timeout": 30}  # runner parameter
    with pytest.raises(local_runner.RunnerError, match='"i"'):
        cast(["i=many"], schemas)
    with pytest.raises(local_runner.RunnerError, match='"b".*true, false'):
        cast(["b=yes"], schemas)


def test_run_applies_defaults_and_casts(pack, capsys):
    code, out, err, result = run_cli(pack, capsys, "text=hi", "count=3", "ratio=0.5",
                                     "loud=true", "tags=a,b", 'extra={"k": 1}')
    assert code == 0
    assert out.index("hello from echo") < out.index("status: succeeded")
    assert result["params"] == {
        "text": "hi", "count": 3, "ratio": 0.5, "loud": True, "tags": ["a", "b"],
        "extra": {"k": 1}, "color": "red", "mode": "fixed", "outcome": "ok"}
    assert result["stored"] == "hi"


def test_unset_optional_parameters_are_passed_as_none(pack, capsys):
    code, _, _, result = run_cli(pack, capsys, "text=hi")
    assert code == 0
    assert result["params"]["ratio"] is None and result["params"]["count"] == 1
    assert "timeout" not in result["params"]  # runner parameters are not passed to run()


@pytest.mark.parametrize("argv, expected", [
    (["text=hi", "bogus=1"], "'bogus' was unexpected"),
    (["count=3"], "'text' is a required property"),
    (["text=hi", "color=blue"], '"color": \'blue\' is not one of'),
    (["text=hi", "loud=1"], '"loud": 1 is not of type'),
    (["text=hi", "mode=other"], "immutable parameter(s) ['mode']"),
    (["text=hi", "count=x"], 'Parameter "count"'),
])
def test_invalid_parameters_are_rejected_before_running(pack, capsys, argv, expected):
    code, out, err, _ = run_cli(pack, capsys, *argv)
    assert code == 2
    assert expected in err
    assert "hello from echo" not in out


def test_unsupported_runner_is_refused(pack, capsys):
    # orquesta workflows run with workflow_runner.py: see test_workflow_runner.py
    (pack / "actions" / "shell.yaml").write_text("name: shell\nrunner_type: local-shell-cmd\n")
    assert local_runner.main(["run", "dialog.shell"], pack_root=str(pack)) == 2
    assert 'runner "local-shell-cmd"' in capsys.readouterr().err


def test_unknown_action_and_wrong_pack(pack, capsys):
    assert local_runner.main(["run", "dialog.nope"], pack_root=str(pack)) == 2
    assert local_runner.main(["run", "other.echo"], pack_root=str(pack)) == 2
    assert 'Action "other.echo" cannot be found' in capsys.readouterr().err


def test_config_file_gets_schema_defaults(pack, capsys, tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "dialog.yaml"
    config.write_text("token: s3cret\n")
    code, _, _, result = run_cli(pack, capsys, "text=hi", "--config", str(config))
    assert code == 0
    assert result["config"] == {"token": "s3cret", "api_url": "http://localhost", "retries": 3}


def test_parameters_may_follow_config_option(pack, capsys):
    (pack / "other.yaml").write_text("token: t\n")
    code, _, _, result = run_cli(pack, capsys, "--config", str(pack / "other.yaml"), "text=hi")
    assert code == 0 and result["params"]["text"] == "hi" and result["config"]["token"] == "t"
    assert run_cli(pack, capsys, "text=hi", "--config", str(pack / "missing.yaml"))[0] == 2


def test_actions_lib_is_importable(pack, capsys, monkeypatch):
    (pack / "actions" / "lib").mkdir()
    (pack / "actions" / "lib" / "lr_test_helper.py").write_text("WORD = 'from lib'\n")
    (pack / "actions" / "uselib.yaml").write_text(
        "name: uselib\nrunner_type: python-script\nentry_point: uselib.py\n")
    (pack / "actions" / "uselib.py").write_text(
        "from st2common.runners.base_action import Action\nimport lr_test_helper\n\n\n"
        "class UseLib(Action):\n    def run(self):\n        return lr_test_helper.WORD\n")
    monkeypatch.delitem(sys.modules, "lr_test_helper", raising=False)
    assert local_runner.run_action("dialog.uselib", pack_root=str(pack)) == (True, "from lib")
    sys.modules.pop("lr_test_helper", None)


def test_default_config_location_and_no_config(pack, capsys):
    _, _, _, result = run_cli(pack, capsys, "text=hi")
    assert result["config"] == {"api_url": "http://localhost", "retries": 3}
    (pack / "dialog.yaml").write_text("token: t\nretries: 5\n")
    _, _, _, result = run_cli(pack, capsys, "text=hi")
    assert result["config"] == {"token": "t", "api_url": "http://localhost", "retries": 5}


@pytest.mark.parametrize("content, expected", [
    ("token: t\nretries: many\n", '"retries": \'many\' is not of type'),
    ("retries: 2\n", "'token' is a required property"),
])
def test_invalid_config_is_rejected(pack, capsys, content, expected):
    (pack / "dialog.yaml").write_text(content)
    code, out, err, _ = run_cli(pack, capsys, "text=hi")
    assert code == 2
    assert expected in err and "Failed validating config" in err


def test_false_tuple_means_failed(pack, capsys):
    code, out, _, result = run_cli(pack, capsys, "text=hi", "outcome=fail")
    assert code == 1
    assert "status: failed" in out
    assert result == {"why": "asked to fail"}


def test_exception_means_failed_with_message_and_traceback(pack, capsys):
    code, out, _, result = run_cli(pack, capsys, "text=hi", "outcome=raise")
    assert code == 1
    assert out.index("hello from echo") < out.index("status: failed")
    assert result["error"] == "boom"
    assert "RuntimeError: boom" in result["traceback"]


def test_non_bool_status_is_a_failure(pack, capsys):
    code, _, _, result = run_cli(pack, capsys, "text=hi", "outcome=weird")
    assert code == 1
    assert "must either be True or False" in result["error"]


def test_run_action_api_and_datastore_seam(pack, capsys):
    store = local_runner.MemoryDatastore()
    with pytest.raises(local_runner.RunnerError, match='"text": 7 is not of type'):
        local_runner.run_action("dialog.echo", {"text": 7}, pack_root=str(pack))
    succeeded, result = local_runner.run_action(
        "dialog.echo", {"text": "x"}, pack_root=str(pack), datastore=store)
    assert succeeded
    assert store.items == {"dialog.EchoAction:last": "x"}


def test_list_actions(pack, capsys):
    assert local_runner.main(["list"], pack_root=str(pack)) == 0
    out = capsys.readouterr().out
    assert "dialog.echo" in out and "Echo the parameters back." in out and "dialog.flow" in out


# --- the st2tests stand-in (or real st2tests under st2-run-pack-tests) -----------------------

class StoreAction(Action):
    def run(self, key, value):
        self.action_service.set_value(key, value)
        return self.action_service.get_value(key)


class TestBaseActionTestCase(BaseActionTestCase):
    action_cls = StoreAction

    def test_datastore_round_trip(self):
        action = self.get_action_instance(config={"a": 1})
        self.assertEqual(action.config["a"], 1)
        self.assertEqual(action.run(key="k", value="v"), "v")
        self.assertEqual(self.action_service.get_value("k"), "v")
        names = [kvp.name for kvp in self.action_service.list_values()]
        self.assertEqual(names, ["tests.StoreAction:k"])
        self.assertIsNone(self.action_service.get_value("k", local=False))
        self.assertTrue(self.action_service.delete_value("k"))
        self.assertIsNone(self.action_service.get_value("k"))
        # st2common.log puts every logger under "st2.": an operator filters on this name.
        self.assertEqual(action.logger.name, "st2.actions.python.StoreAction")


TICK = {"deployment": "chat", "source": "http://127.0.0.1:9090", "reason": "tick"}


class TickSensor(PollingSensor):
    def setup(self):
        pass

    def poll(self):
        # A trigger type the pack registers, with a valid payload: st2 drops anything else.
        self.sensor_service.dispatch(trigger="dialog.metrics_unavailable", payload=TICK)

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


class TestBaseSensorTestCase(BaseSensorTestCase):
    sensor_cls = TickSensor

    def test_dispatch_is_recorded(self):
        sensor = self.get_sensor_instance(config={"x": 1}, poll_interval=7)
        self.assertEqual(sensor.get_poll_interval(), 7)
        sensor.poll()
        self.assertEqual(len(self.get_dispatched_triggers()), 1)
        self.assertEqual(self.get_last_dispatched_trigger()["payload"], TICK)
        self.assertTrue(self.assertTriggerDispatched(trigger="dialog.metrics_unavailable",
                                                     payload=TICK))
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched(trigger="dialog.metrics_unavailable",
                                         payload=dict(TICK, reason="tock"))


NESTED_META = {"name": "probe", "runner_type": "python-script", "parameters": {
    "target": {"type": "object", "properties": {
        "host": {"type": "string", "required": True},
        "port": {"type": "integer", "default": 22, "required": True},
        "user": {"type": "string"}}}}}


def test_requests_are_validated_with_stackstorms_schema_code():
    """As st2's create_request: st2common.util.schema.validate(params, schema, CustomValidator,
    use_default=True, allow_default_none=True), nested objects included; the action gets the
    parameters as given plus the top-level defaults (st2common/util/param.py)."""
    params, _ = local_runner.prepare_parameters(NESTED_META, {"target": {"host": "h",
                                                                         "user": None}})
    assert params == {"target": {"host": "h", "user": None}}
    with pytest.raises(local_runner.RunnerError,
                       match="\"target.port\": '22' is not of type 'integer'"):
        local_runner.prepare_parameters(NESTED_META, {"target": {"host": "h", "port": "22"}})
    with pytest.raises(local_runner.RunnerError, match="'host' is a required property"):
        local_runner.prepare_parameters(NESTED_META, {"target": {}})
    # A draft-4 list `required` is not StackStorm's dialect: st2 refuses every request.
    broken = {"name": "probe", "runner_type": "python-script", "parameters": {"target": {
        "type": "object", "required": ["host"], "properties": {"host": {"type": "string"}}}}}
    with pytest.raises(local_runner.RunnerError, match="not one StackStorm accepts"):
        local_runner.prepare_parameters(broken, {"target": {"host": "h"}})


def test_a_config_context_default_is_rendered_from_the_pack_config_as_st2_does():
    """dialog.announce's channel defaults to {{ config_context.chat_channel }}: st2 renders it
    from the pack config when it creates the execution; an absent key renders empty, so the
    announcement is skipped rather than posted to a channel named by the template."""
    meta = local_runner.load_action_metadata("dialog.announce")
    params, _ = local_runner.prepare_parameters(meta, {"message": "hi"},
                                                {"chat_channel": "#ops"})
    assert params["channel"] == "#ops"
    params, _ = local_runner.prepare_parameters(meta, {"message": "hi"}, {})
    assert params["channel"] == ""
    params, _ = local_runner.prepare_parameters(meta, {"message": "hi", "channel": "#x"},
                                                {"chat_channel": "#ops"})
    assert params["channel"] == "#x"
