"""Pack metadata as StackStorm and the Exchange check it: pack.yaml, action YAMLs, config."""

import glob
import importlib.util
import inspect
import os
import re

import pytest
import yaml
from jsonschema.exceptions import SchemaError, ValidationError
from st2common.util import schema as util_schema

from local_runner import RunnerError, load_config, runner_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTION_FILES = sorted(glob.glob(os.path.join(ROOT, "actions", "*.yaml")))
ST2_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
# st2common's RUNNER_PARAM_OVERRIDABLE_ATTRS: what an action may change of a runner parameter.
RUNNER_OVERRIDABLE = {"default", "description", "enum", "immutable", "required"}
SECRET_NAME = re.compile(r"(token|secret|password|passphrase|private_key|access_key)")


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def action_class(meta):
    path = os.path.join(ROOT, "actions", meta["entry_point"])
    spec = importlib.util.spec_from_file_location("entry_" + meta["name"], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if c.__module__ == module.__name__ and hasattr(c, "run")]
    assert len(classes) == 1, classes
    return classes[0]


def test_pack_yaml_follows_exchange_conventions():
    pack = load(os.path.join(ROOT, "pack.yaml"))
    assert pack["ref"] == "dialog"
    assert re.match(r"^\d+\.\d+\.\d+$", pack["version"])
    assert pack["python_versions"] == ["3"]
    assert pack["stackstorm_version"] == ">=3.8.0"
    for key in ("name", "description", "keywords", "author", "email"):
        assert pack[key], key
    with open(os.path.join(ROOT, "CHANGES.md"), encoding="utf-8") as handle:
        assert "## %s" % pack["version"] in handle.read(), "CHANGES.md lacks this version"
    for name in ("README.md", "LICENSE", "icon.png", "requirements.txt",
                 "requirements-tests.txt", "config.schema.yaml", "dialog.yaml.example"):
        assert os.path.isfile(os.path.join(ROOT, name)), name
    for folder in ("actions", "sensors", "rules", "workflows", "aliases", "policies", "tests"):
        assert os.path.isdir(os.path.join(ROOT, folder)), folder


def test_workflows_are_reachable_from_actions_through_a_relative_link():
    link = os.path.join(ROOT, "actions", "workflows")
    assert os.path.islink(link) and os.readlink(link) == "../workflows"


def test_runtime_requirements_are_bounded_ranges():
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        lines = [x.strip() for x in handle if x.strip() and not x.startswith("#")]
    assert lines
    for line in lines:
        assert ">=" in line and "<" in line.replace("<=", ""), line


@pytest.mark.parametrize("path", ACTION_FILES, ids=os.path.basename)
def test_action_metadata(path):
    meta = load(path)
    assert meta["name"] == os.path.splitext(os.path.basename(path))[0]
    assert meta.get("pack", "dialog") == "dialog"
    assert meta["description"] and meta["enabled"] is True
    assert meta["runner_type"] in ("python-script", "orquesta")
    entry = os.path.join(ROOT, "actions", meta["entry_point"])
    assert os.path.isfile(entry), meta["entry_point"]
    parameters = meta.get("parameters") or {}
    positions = [p["position"] for p in parameters.values() if "position" in p]
    assert sorted(positions) == list(range(len(positions))), "positions unique, from 0"
    for name, spec in parameters.items():
        if name in runner_parameters(meta):
            assert set(spec) <= RUNNER_OVERRIDABLE, "%s: runner parameter overrides" % name
            continue
        assert spec.get("type") in ST2_TYPES, name
        assert spec.get("description"), name
        if SECRET_NAME.search(name):
            assert spec.get("secret") is True, "%s must be secret: true" % name
        if "enum" in spec and "default" in spec:
            assert spec["default"] in spec["enum"], name


@pytest.mark.parametrize("path", [p for p in ACTION_FILES
                                  if load(p)["runner_type"] == "python-script"],
                         ids=os.path.basename)
def test_python_action_run_signature_matches_parameters(path):
    meta = load(path)
    parameters = {n: s for n, s in (meta.get("parameters") or {}).items()
                  if n not in runner_parameters(meta)}
    run = action_class(meta).run
    if "lock_owner" in parameters:
        # Taken by DialogAction (reports_errors) around run(): the operation lock's owner.
        lock_owner = parameters.pop("lock_owner")
        assert hasattr(run, "__wrapped__"), "lock_owner needs run() wrapped in reports_errors"
        assert lock_owner["type"] == "string" and not lock_owner.get("required")
    signature = inspect.signature(run)
    arguments = {n: p for n, p in signature.parameters.items() if n != "self"}
    assert set(arguments) == set(parameters)
    for name, spec in parameters.items():
        has_default = arguments[name].default is not inspect.Parameter.empty
        assert has_default != bool(spec.get("required")), name
        if "default" in spec:
            assert arguments[name].default == spec["default"], name


def _walk(schema, path=()):
    for name, spec in (schema or {}).items():
        yield path + (name,), spec
        if isinstance(spec, dict):
            yield from _walk(spec.get("properties"), path + (name,))
            extra = spec.get("additionalProperties")
            if isinstance(extra, dict):
                yield from _walk(extra.get("properties"), path + (name, "*"))
            if isinstance(spec.get("items"), dict):
                yield from _walk(spec["items"].get("properties"), path + (name, "[]"))


def test_every_credential_in_the_config_schema_is_secret():
    schema = load(os.path.join(ROOT, "config.schema.yaml"))
    credentials = [(p, s) for p, s in _walk(schema) if SECRET_NAME.search(p[-1])]
    assert len(credentials) >= 4
    for path, spec in credentials:
        assert spec.get("secret") is True, ".".join(path)


def test_example_config_validates_against_the_schema():
    config = load_config(pack_root=ROOT, config_path=os.path.join(ROOT, "dialog.yaml.example"))
    assert config["default_profile"] in config["profiles"]


@pytest.mark.parametrize("broken", [
    "profiles:\n  p:\n    provider: gcp\n",
    "profiles:\n  p:\n    region: fra1\n",
    "profiles:\n  p:\n    provider: aws\n    aws_secret: x\n",
    "profiles:\n  p:\n    provider: static\n    hosts:\n      - {name: a, roles: [web]}\n",
])
def test_config_schema_refuses_what_it_should(tmp_path, broken):
    path = tmp_path / "dialog.yaml"
    path.write_text(broken)
    with pytest.raises(RunnerError):
        load_config(pack_root=ROOT, config_path=str(path))


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1]
    commands = [x for x in block.splitlines()[1:] if x.strip()]
    assert len(commands) == 2, commands
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        assert commands[1] in handle.read().replace("exec ", "")


# --- The pack's schemas through StackStorm's meta-schemas (st2common/util/schema/*.json) ------

def st2_api_validate(instance, properties):
    """BaseAPI.validate() of an st2 API model, restricted to the given properties of its
    schema: util_schema.validate with CustomValidator, use_default and allow_default_none."""
    return util_schema.validate(instance, {"type": "object", "properties": properties},
                                cls=util_schema.CustomValidator, use_default=True,
                                allow_default_none=True)


def action_api_properties():
    """ActionAPI's `parameters` and `output_schema` (st2common/models/api/action.py): each
    parameter against action_params.json, the output schema against action_output_schema.json.
    Checked when st2 registers the action; a failure leaves the action out."""
    return {"parameters": {"type": "object", "patternProperties": {
                r"^\w+$": util_schema.get_action_parameters_schema()},
                "additionalProperties": False, "default": {}},
            "output_schema": util_schema.get_action_output_schema(
                description="Action Output Schema")}


def config_schema_api_properties():
    """ConfigSchemaAPI's `attributes` (st2common/models/api/pack.py): each config key against
    action_params.json, checked when st2 registers config.schema.yaml."""
    return {"attributes": {"type": "object", "patternProperties": {
        r"^\w+$": util_schema.get_action_parameters_schema()},
        "additionalProperties": False, "default": {}}}


def trigger_types():
    for path in sorted(glob.glob(os.path.join(ROOT, "sensors", "*.yaml"))):
        for trigger_type in load(path).get("trigger_types") or []:
            yield trigger_type


@pytest.mark.parametrize("path", ACTION_FILES, ids=os.path.basename)
def test_action_schemas_pass_stackstorms_meta_schemas(path):
    meta = load(path)
    st2_api_validate({k: meta[k] for k in ("parameters", "output_schema") if k in meta},
                     action_api_properties())


def test_config_schema_passes_stackstorms_meta_schema():
    st2_api_validate({"attributes": load(os.path.join(ROOT, "config.schema.yaml"))},
                     config_schema_api_properties())


def test_trigger_schemas_are_in_stackstorms_dialect():
    """st2 registers any payload_schema but checks it against its custom meta-schema at every
    dispatch (validate_trigger_payload); one it refuses drops every trigger of that type."""
    found = list(trigger_types())
    assert found
    for trigger_type in found:
        for key in ("payload_schema", "parameters_schema"):
            if trigger_type.get(key):
                util_schema.CustomValidator.check_schema(trigger_type[key])


@pytest.mark.parametrize("bad", [
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"type": "string", "required": "yes"}}},
    {"type": ["string", "null"]},
    {"type": "string", "format": "uri"},
    {"type": "strnig"},
    {"type": "string", "requried": True},
], ids=str)
def test_the_meta_schema_checks_refuse_what_stackstorm_refuses(bad):
    with pytest.raises(ValidationError):
        st2_api_validate({"parameters": {"p": bad}}, action_api_properties())
    with pytest.raises(ValidationError):
        st2_api_validate({"attributes": {"p": bad}}, config_schema_api_properties())


def test_a_draft4_required_list_is_not_stackstorms_dialect():
    with pytest.raises(SchemaError):
        util_schema.CustomValidator.check_schema(
            {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}})
