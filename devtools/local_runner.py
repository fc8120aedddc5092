#!/usr/bin/env python3
"""Run one of this pack's actions locally, the way StackStorm's python and orquesta runners do.

    python3 devtools/local_runner.py list
    python3 devtools/local_runner.py run dialog.<action> key=value ... [--config FILE]

Parameters are cast like the st2 CLI casts them, validated like the st2 API validates them
(problems are reported before the action runs: exit code 2), then the action class is loaded and
run in this process with the pack config and a local datastore. Exit code 0 means succeeded,
1 failed. python-script actions run directly; orquesta workflows run with workflow_runner.py
(needs orquesta), their python actions in threads of this process, with one config and datastore.
"""

import argparse
import ast
import copy
import glob
import hashlib
import importlib.util
import inspect
import io
import json
import os
import sys
import textwrap
import threading
import traceback
import types

import jsonschema
import yaml

DEVTOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(DEVTOOLS_DIR)
STANDIN_PATH = os.path.join(DEVTOOLS_DIR, "st2_standin")

# runner_parameters of python-script (contrib/runners/python_runner/python_runner/runner.yaml).
# st2 accepts them on every python action but does not pass them to run().
RUNNER_PARAMETERS = {
    "debug": {"type": "boolean", "default": False},
    "content_version": {"type": "string"},
    "env": {"type": "object"},
    "timeout": {"type": "integer", "default": 600},
    "log_level": {"type": "string", "default": "DEBUG",
                  "enum": ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]},
}
ORQUESTA_RUNNER_PARAMETERS = {"notify": {"type": "array", "items": {"type": "string"},
                                         "default": []}}
SCHEMA_ANY_TYPE = {"anyOf": [{"type": t} for t in
                             ("array", "boolean", "integer", "number", "object", "string")]}


class RunnerError(Exception):
    """A problem StackStorm reports before the action runs (CLI exit code 2)."""


def _validator():
    # st2's CustomValidator: draft 4, but draft 3 "properties" so that `required: true` sits on
    # each property, and no draft 4 "required" keyword.
    validators = dict(jsonschema.Draft4Validator.VALIDATORS)
    validators["properties"] = jsonschema.Draft3Validator.VALIDATORS["properties"]
    validators.pop("required", None)
    return jsonschema.validators.create(
        meta_schema=jsonschema.Draft4Validator.META_SCHEMA, validators=validators,
        type_checker=jsonschema.Draft4Validator.TYPE_CHECKER)


def _schema_errors(instance, properties, additional):
    schema = {"type": "object", "additionalProperties": additional,
              "properties": {k: v or SCHEMA_ANY_TYPE for k, v in properties.items()}}
    errors = sorted(_validator()(schema).iter_errors(instance), key=lambda e: list(e.path))
    return [e.message if e.validator in ("required", "additionalProperties") or not e.path
            else '"%s": %s' % (".".join(str(p) for p in e.path), e.message) for e in errors]


def load_pack_ref(pack_root=PACK_ROOT):
    if not os.path.isfile(os.path.join(pack_root, "pack.yaml")):
        raise RunnerError("%s has no pack.yaml" % os.path.abspath(pack_root))
    with open(os.path.join(pack_root, "pack.yaml")) as fp:
        meta = yaml.safe_load(fp) or {}
    return meta.get("ref") or meta.get("name")


def list_actions(pack_root=PACK_ROOT):
    """[{"ref", "runner_type", "description", "path", "meta"}] of actions/*.yaml, by ref."""
    pack, result = load_pack_ref(pack_root), []
    for path in sorted(glob.glob(os.path.join(pack_root, "actions", "*.y*ml"))):
        try:
            with open(path) as fp:
                meta = yaml.safe_load(fp) or {}
        except yaml.YAMLError as e:  # st2 registration skips broken metadata, so do we
            print("WARNING: skipping %s: %s" % (path, e), file=sys.stderr)
            continue
        if meta.get("name"):
            result.append({"ref": "%s.%s" % (pack, meta["name"]), "path": path,
                           "runner_type": meta.get("runner_type"), "meta": meta,
                           "description": meta.get("description", "")})
    return sorted(result, key=lambda a: a["ref"])


def load_action_metadata(ref, pack_root=PACK_ROOT):
    for action in list_actions(pack_root):
        if action["ref"] == ref:
            return action["meta"]
    raise RunnerError('Action "%s" cannot be found.' % ref)


def runner_parameters(meta):
    if meta.get("runner_type") == "orquesta":
        return ORQUESTA_RUNNER_PARAMETERS
    return RUNNER_PARAMETERS


def parameter_schemas(meta):
    """Runner parameters overlaid with the action's parameters (st2 deep-merges them)."""
    schemas = copy.deepcopy(runner_parameters(meta))
    for name, schema in (meta.get("parameters") or {}).items():
        schemas.setdefault(name, {}).update(copy.deepcopy(schema or {}))
    return schemas


def _cast(param_type, value):
    if param_type == "boolean":  # st2 CLI: ast.literal_eval(x.capitalize()), so true/false only
        try:
            return ast.literal_eval(value.capitalize())
        except (ValueError, SyntaxError):
            raise ValueError("Invalid value for boolean parameter. Valid values are: true, false")
    if param_type == "integer":
        return int(value)
    if param_type == "number":
        return float(value)
    if param_type == "array":
        try:
            value = str([int(value)])  # a lone integer is a one-item array
        except ValueError:
            pass
        try:
            return json.loads(value)
        except ValueError:
            return [v.strip() for v in value.split(",")]
    if param_type == "object":
        if value.startswith("{"):
            return json.loads(value)
        return dict(p.split("=", 1) for p in value.split(",") if "=" in p)
    return value


def cast_cli_parameters(args, schemas):
    """Turn st2-CLI style ["k=v", "@k=file", ...] into typed values; the rest becomes "cmd"."""
    result = {}
    for idx, arg in enumerate(args):
        if "=" not in arg:
            result["cmd"] = " ".join(args[idx:])
            break
        name, value = arg.split("=", 1)
        if name.startswith("@"):
            name = name[1:]
            with open(value, "rb") as fp:
                result[name] = fp.read().decode("utf-8")
            continue
        param_type = (schemas.get(name) or {}).get("type")
        try:
            value = _cast(param_type, value)
        except ValueError as e:
            raise RunnerError('Parameter "%s" (%s): %s' % (name, param_type, e))
        if param_type == "array" and name in result:
            result[name] += value
        else:
            result[name] = value
    return result


def allow_default_none(schemas):
    """st2's modify_schema_allow_default_none (st2common/util/schema): an optional parameter
    whose default is absent or null also accepts null, as Orquesta passes it for an unset
    workflow input. Top level only, as the pack's parameters need. An enum still refuses null,
    as in st2: a workflow must leave such a parameter out rather than pass null."""
    schemas = {n: copy.deepcopy(s or SCHEMA_ANY_TYPE) for n, s in schemas.items()}
    for schema in schemas.values():
        if schema.get("required") or schema.get("default") is not None:
            continue
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                if {"type": "null"} not in schema[key]:
                    schema[key].append({"type": "null"})
                break
        else:
            kind = schema.get("type", "string")
            kinds = kind if isinstance(kind, list) else [kind]
            if "null" not in kinds:
                schema["type"] = kinds + ["null"]
    return schemas


def prepare_parameters(meta, params):
    """Validate typed parameters and apply defaults; return (action_params, runner_params)."""
    schemas, given, params = parameter_schemas(meta), list(params), dict(params)
    for name, schema in schemas.items():
        if params.get(name) is None and schema.get("default") is not None:
            params[name] = copy.deepcopy(schema["default"])
    errors = _schema_errors(params, allow_default_none(schemas), additional=False)
    if errors:
        raise RunnerError("Invalid parameters for %s:\n  %s" % (meta["name"], "\n  ".join(errors)))
    immutable = [n for n in given if schemas[n].get("immutable")]
    if immutable:
        raise RunnerError("Override of immutable parameter(s) %s is unsupported." % immutable)
    for name, schema in schemas.items():
        default = schema.get("default")
        if name not in given and isinstance(default, str) and ("{{" in default or "{%" in default):
            print("WARNING: Jinja default of %s is passed unrendered" % name, file=sys.stderr)
    runner = runner_parameters(meta)
    action_names = [n for n in (meta.get("parameters") or {}) if n not in runner]
    return ({n: params.get(n) for n in action_names},
            {n: params.get(n) for n in runner if params.get(n) is not None})


def _assign_config_defaults(properties, config):
    for key, schema in properties.items():
        if "default" in schema and key not in config:
            config[key] = copy.deepcopy(schema["default"])
        if schema.get("type") == "object" and schema.get("properties"):
            if not config.get(key):
                config[key] = {}
            if isinstance(config[key], dict):
                _assign_config_defaults(schema["properties"], config[key])
    return config


def load_config(pack_root=PACK_ROOT, config_path=None):
    """Pack config from config_path, else <pack ref>.yaml at the pack root, else {}; validated
    against config.schema.yaml (only when a config file exists, as st2 validates on register)
    and completed with the schema's defaults."""
    pack = load_pack_ref(pack_root)
    if config_path and not os.path.exists(config_path):
        raise RunnerError("Config file %s does not exist" % config_path)
    config_path = config_path or os.path.join(pack_root, "%s.yaml" % pack)
    schema_path = os.path.join(pack_root, "config.schema.yaml")
    config, properties = {}, {}
    if os.path.isfile(schema_path):
        with open(schema_path) as fp:
            properties = yaml.safe_load(fp) or {}
    if os.path.exists(config_path):
        with open(config_path) as fp:
            config = yaml.safe_load(fp) or {}
        if not isinstance(config, dict):
            raise RunnerError("Pack config %s must be a mapping" % config_path)
        config = _assign_config_defaults(properties, config)
        errors = _schema_errors(config, properties, additional=True)
        if errors:
            raise RunnerError('Failed validating config for pack "%s" (%s):\n  %s'
                              % (pack, config_path, "\n  ".join(errors)))
    return _assign_config_defaults(properties, config)


class MemoryDatastore(object):
    """Key-value items by full key name, kept in memory. Seam for a file-backed store: pass
    loaded items and override save(), which is called after every change."""

    def __init__(self, items=None, encrypted=()):
        self.items = dict(items or {})
        self.encrypted = set(encrypted)  # keys set with encrypt=True

    def save(self):
        pass


class LocalActionService(object):
    """What st2's ActionService offers an action: datastore access local to pack and class."""

    def __init__(self, pack, class_name, datastore, log_level="debug"):
        self._action_wrapper = types.SimpleNamespace(
            _pack=pack, _class_name=class_name, _log_level=log_level)
        self._store = datastore
        self._prefix = "%s.%s:" % (pack, class_name)

    @property
    def datastore_service(self):
        return self

    def _key(self, name, local, scope="system"):
        if scope != "system":
            raise ValueError("Scope %s is unsupported." % scope)
        return self._prefix + name if local else name

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        start = (self._prefix if local else "") + (prefix or "")
        return [types.SimpleNamespace(id=k, name=k, value=v)
                for k, v in sorted(self._store.items.items()) if k.startswith(start)]

    def get_value(self, name, local=True, scope="system", decrypt=False):
        key = self._key(name, local, scope)
        value = self._store.items.get(key)
        if value is not None and key in self._store.encrypted and not decrypt:
            # st2 hands out the ciphertext (hex) unless asked to decrypt; so does this stand-in.
            return hashlib.sha256(value.encode()).hexdigest().upper()
        return value

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        key = self._key(name, local, scope)
        self._store.items[key] = str(value)  # the st2 API keeps strings
        if encrypt:
            self._store.encrypted.add(key)
        else:
            self._store.encrypted.discard(key)
        self._store.save()
        return True

    def delete_value(self, name, local=True, scope="system"):
        found = self._store.items.pop(self._key(name, local, scope), None) is not None
        self._store.encrypted.discard(self._key(name, local, scope))
        self._store.save()
        return found


def _action_base_class():
    """st2common's Action; the stand-in is put on sys.path only if st2common doesn't import."""
    try:
        from st2common.runners.base_action import Action
    except Exception:
        for mod in [m for m in sys.modules if m.split(".")[0] == "st2common"]:
            del sys.modules[mod]
        sys.path.insert(0, STANDIN_PATH)
        from st2common.runners.base_action import Action
    return Action


def execute(meta, action_params, config=None, pack_root=PACK_ROOT, datastore=None,
            log_level="debug"):
    """Load and run the action like python_action_wrapper; return (succeeded, result)."""
    try:
        entry_point = os.path.join(pack_root, "actions", meta["entry_point"])
        lib_dir = os.path.join(pack_root, "actions", "lib")
        if lib_dir not in sys.path:
            sys.path.insert(0, lib_dir)  # PYTHONPATH of the action process
        if os.path.dirname(entry_point) not in sys.path:
            sys.path.append(os.path.dirname(entry_point))  # st2common.util.loader appends it
        action_base = _action_base_class()
        module_name = os.path.splitext(os.path.basename(entry_point))[0]
        spec = importlib.util.spec_from_file_location(module_name, entry_point)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if c.__module__ == module.__name__ and issubclass(c, action_base)
                   and not inspect.isabstract(c)]
        if len(classes) != 1:
            raise RuntimeError('File "%s" must define exactly one Action class, found %s (st2 '
                               'would take the first by name)' % (entry_point, classes))
        service = LocalActionService(load_pack_ref(pack_root), classes[0].__name__,
                                     datastore or MemoryDatastore(), log_level)
        output = classes[0](config=config or {}, action_service=service).run(**action_params)
    except (Exception, SystemExit) as e:
        return False, {"error": str(e), "traceback": traceback.format_exc()}
    status, result = output if isinstance(output, tuple) and len(output) == 2 else (None, output)
    if status is not None and not isinstance(status, bool):
        return False, {"error": "Status returned from the action run() method must either be "
                                "True or False, got: %s" % (status,)}
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = str(result)
    return status is not False, result


class _ThreadOutput(object):
    """sys.stdout or sys.stderr while a workflow runs: what a thread writes while it has a
    buffer goes there (st2 keeps an action's output in its result), the rest passes through."""

    def __init__(self, stream):
        self.stream, self.local = stream, threading.local()

    def __getattr__(self, name):
        return getattr(getattr(self.local, "capture", None) or self.stream, name)


class _EchoBuffer(io.StringIO):
    """An action's stdout buffer that also hands every complete line to echo(line)."""

    def __init__(self, echo, stream):
        super().__init__()
        self.echo, self.stream, self.pending = echo, stream, ""

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        if lines:
            # echo() prints: let that reach the real stream instead of coming back here.
            self.stream.local.capture = None
            try:
                for line in lines:
                    self.echo(line)
            finally:
                self.stream.local.capture = self
        return super().write(text)


def python_action_executor(config=None, pack_root=PACK_ROOT, datastore=None, echo=None):
    """execute(action_ref, input) for workflow_runner: validates and runs one of the pack's
    python actions with execute() and shapes the result like st2's python runner ({"result",
    "stdout", "stderr", "exit_code"}). RunnerError (a refused request) for anything else.
    With echo, each line an action prints is also passed to echo(line) as it is printed."""
    _action_base_class()  # import st2common (or the stand-in) before worker threads need it

    def execute_action(ref, params):
        meta = load_action_metadata(ref, pack_root)
        if meta.get("runner_type") != "python-script" or not meta.get("enabled", True):
            raise RunnerError('Action "%s" (runner %s) cannot run here.'
                              % (ref, meta.get("runner_type")))
        action_params, runner_params = prepare_parameters(meta, params)
        streams = sys.stdout, sys.stderr
        echoing = echo and isinstance(streams[0], _ThreadOutput)
        buffers = (_EchoBuffer(echo, streams[0]) if echoing else io.StringIO()), io.StringIO()
        for stream, buffer in zip(streams, buffers):
            if isinstance(stream, _ThreadOutput):
                stream.local.capture = buffer
        try:
            succeeded, result = execute(meta, action_params, config, pack_root, datastore,
                                        runner_params.get("log_level", "debug").lower())
        finally:
            for stream in streams:
                if isinstance(stream, _ThreadOutput):
                    stream.local.capture = None
        output = {"stdout": buffers[0].getvalue(), "stderr": buffers[1].getvalue(),
                  "exit_code": 0, "result": result}
        if not succeeded and isinstance(result, dict) and "traceback" in result:  # it raised
            output.update(stderr=output["stderr"] + result["traceback"], exit_code=1, result=None)
        return succeeded, output

    return execute_action


def run_workflow(ref, action_params, config=None, pack_root=PACK_ROOT, datastore=None,
                 progress=None):
    """Run an orquesta action with workflow_runner.py; return its WorkflowResult."""
    if DEVTOOLS_DIR not in sys.path:
        sys.path.insert(0, DEVTOOLS_DIR)
    try:
        import workflow_runner  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise RunnerError("Running a workflow needs orquesta (see requirements-tests.txt): %s"
                          % e)
    execute_action = python_action_executor(config, pack_root, datastore or MemoryDatastore(),
                                            echo=workflow_runner.action_output if progress
                                            else None)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ThreadOutput(saved[0]), _ThreadOutput(saved[1])
    try:
        return workflow_runner.run_workflow(ref, action_params, execute_action, pack_root,
                                            progress)
    finally:
        sys.stdout, sys.stderr = saved


def run_action(ref, parameters=None, config_path=None, pack_root=PACK_ROOT, datastore=None,
               progress=None):
    """Run the action with typed parameters; RunnerError for anything st2 rejects up front.
    A workflow's result is what st2 stores for it: {"output": ...}, plus "errors" if failed."""
    meta = load_action_metadata(ref, pack_root)
    if meta.get("runner_type") not in ("python-script", "orquesta"):
        raise RunnerError('Action "%s" uses runner "%s"; the local runner supports python-script '
                          'and orquesta only.' % (ref, meta.get("runner_type")))
    if not meta.get("enabled", True):
        raise RunnerError('Unable to execute. Action "%s" is disabled.' % ref)
    action_params, runner_params = prepare_parameters(meta, parameters or {})
    config = load_config(pack_root, config_path)
    if meta["runner_type"] == "orquesta":
        result = run_workflow(ref, action_params, config, pack_root, datastore, progress)
        return result.succeeded, result.result
    return execute(meta, action_params, config, pack_root, datastore,
                   runner_params.get("log_level", "debug").lower())


def main(argv=None, pack_root=PACK_ROOT):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack-root", default=pack_root, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the pack's actions")
    run = sub.add_parser("run", help="run an action")
    run.add_argument("ref", help="action ref, e.g. dialog.plan")
    run.add_argument("parameters", nargs="*", help="key=value (st2 run syntax)")
    run.add_argument("--config", help="pack config file (default: <pack>.yaml at pack root)")
    args, extra = parser.parse_known_args(argv)  # key=value after --config lands in extra
    if args.command != "run" and extra or [e for e in extra if e.startswith("-")]:
        parser.error("unrecognized arguments: %s" % " ".join(extra))
    params = (getattr(args, "parameters", None) or []) + extra
    try:
        if args.command == "list":
            for action in list_actions(args.pack_root):
                print("%-32s %-14s %s" % (action["ref"], action["runner_type"],
                                          action["description"]))
            return 0
        meta = load_action_metadata(args.ref, args.pack_root)
        params = cast_cli_parameters(params, parameter_schemas(meta))
        succeeded, result = run_action(args.ref, params, args.config, args.pack_root,
                                       progress=print)
    except (RunnerError, OSError, yaml.YAMLError) as e:
        print("ERROR: %s" % e, file=sys.stderr)
        return 2
    if not succeeded and isinstance(result, dict) and result.get("traceback"):
        print(result["traceback"], file=sys.stderr)
    print("status: %s" % ("succeeded" if succeeded else "failed"))
    print("result:\n%s" % textwrap.indent(json.dumps(result, indent=2, sort_keys=True), "  "))
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
