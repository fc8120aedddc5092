#!/usr/bin/env python3
"""Run one of this pack's actions locally, the way StackStorm's python and orquesta runners do.

    python3 devtools/local_runner.py list
    python3 devtools/local_runner.py run dialog.<action> key=value ... [--config FILE]

Parameters are cast like the st2 CLI casts them, validated like the st2 API validates them
(problems are reported before the action runs: exit code 2), then the action runs with the pack
config and a local datastore. Exit code 0 means succeeded, 1 failed or timed out. A python-script
action runs as StackStorm's python runner runs it: in a fresh interpreter of its own
(action_process.py) with st2's sys.path, killed when its `timeout` runs out, its datastore
calls answered by this process. Orquesta workflows run with workflow_runner.py (needs
orquesta), each of their python actions that way, all with one config and datastore.
"""

import argparse
import ast
import copy
import glob
import importlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
import traceback
import types
import uuid

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


class RunnerError(Exception):
    """A problem StackStorm reports before the action runs (CLI exit code 2)."""


def _st2_schema():
    """st2common.util.schema: StackStorm's own where st2common imports, else the stand-in's
    port of it (CustomValidator, validate() with use_default and allow_default_none)."""
    _action_base_class()  # puts the stand-in on sys.path when st2common does not import
    from st2common.util import schema as util_schema  # pylint: disable=import-outside-toplevel
    return util_schema


def _schema_errors(instance, properties, additional):
    """What st2 finds validating `instance` against the parameters `properties` (the request
    check of st2common/services/action.py: util_schema.validate(params, schema, CustomValidator,
    use_default=True, allow_default_none=True)), one message per problem, naming the field
    (st2 stops at the first). A schema st2 refuses (SchemaError) refuses every request."""
    util_schema = _st2_schema()
    schema = util_schema.get_schema_for_resource_parameters(
        parameters_schema=properties, allow_additional_properties=additional)
    try:
        util_schema.validate(instance, schema, cls=util_schema.CustomValidator,
                             use_default=True, allow_default_none=True)
        return []
    except jsonschema.SchemaError as e:
        return ["the parameters' schema is not one StackStorm accepts: %s" % e.message]
    except jsonschema.ValidationError:
        pass
    # The same schema and defaulted instance validate() checked, to list every error.
    schema = util_schema.modify_schema_allow_default_none(schema=schema)
    instance = util_schema.assign_default_values(instance=instance, schema=schema)
    errors = sorted(util_schema.CustomValidator(schema).iter_errors(instance),
                    key=lambda e: [str(p) for p in e.path])
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


def render_config_default(value, config):
    """A parameter default that names `config_context`, rendered as st2 renders it when it
    creates the execution (st2common.util.param: the pack config is `config_context`; an
    absent key renders as an empty string)."""
    import jinja2  # pylint: disable=import-outside-toplevel
    return jinja2.Environment().from_string(value).render(config_context=config or {})


def prepare_parameters(meta, params, config=None):
    """Validate typed parameters and apply defaults; return (action_params, runner_params).
    With the pack's config, defaults that name config_context are rendered from it."""
    schemas, given, params = parameter_schemas(meta), list(params), dict(params)
    for name, schema in schemas.items():
        if params.get(name) is None and schema.get("default") is not None:
            params[name] = copy.deepcopy(schema["default"])
            if config is not None and isinstance(params[name], str) \
                    and "config_context" in params[name]:
                params[name] = render_config_default(params[name], config)
    # allow_default_none: an optional parameter also accepts null, as Orquesta passes it for
    # an unset workflow input; an enum still refuses null (a workflow must leave it out).
    errors = _schema_errors(params, schemas, additional=False)
    if errors:
        raise RunnerError("Invalid parameters for %s:\n  %s" % (meta["name"], "\n  ".join(errors)))
    immutable = [n for n in given if schemas[n].get("immutable")]
    if immutable:
        raise RunnerError("Override of immutable parameter(s) %s is unsupported." % immutable)
    for name, schema in schemas.items():
        default = schema.get("default")
        if name not in given and isinstance(default, str) and ("{{" in default or "{%" in default) \
                and not (config is not None and "config_context" in default):
            print("WARNING: Jinja default of %s is passed unrendered" % name, file=sys.stderr)
    runner = runner_parameters(meta)
    action_names = [n for n in (meta.get("parameters") or {}) if n not in runner]
    return ({n: params.get(n) for n in action_names},
            {n: params.get(n) for n in runner if params.get(n) is not None})


def _devtools_module(name):
    """A module of devtools/ (st2_crypto, st2_config_loader), wherever this file runs from."""
    if DEVTOOLS_DIR not in sys.path:
        sys.path.append(DEVTOOLS_DIR)
    return importlib.import_module(name)


def load_config(pack_root=PACK_ROOT, config_path=None, datastore=None, user=None):
    """The pack config as StackStorm hands it to a python action or sensor. From config_path,
    else <pack ref>.yaml at the pack root (st2's /opt/stackstorm/configs/<pack>.yaml), else
    none. A config file is first validated against config.schema.yaml as
    `st2ctl reload --register-configs` validates it (RunnerError where st2 would not register
    it), then loaded like ContentPackConfigLoader (devtools/st2_config_loader.py) for `user`:
    st2kv expressions rendered from `datastore` (an empty MemoryDatastore when None), every
    `secret: true` field decrypted, the schema's defaults filled in. A failure to render or
    decrypt raises st2's own error, which fails the execution in st2."""
    _action_base_class()  # the loader validates with st2common.util.schema (or the stand-in's)
    loader = _devtools_module("st2_config_loader")
    pack = load_pack_ref(pack_root)
    if config_path and not os.path.exists(config_path):
        raise RunnerError("Config file %s does not exist" % config_path)
    config_path = config_path or os.path.join(pack_root, "%s.yaml" % pack)
    schema_path = os.path.join(pack_root, "config.schema.yaml")
    schema, values = {}, {}
    if os.path.isfile(schema_path):
        with open(schema_path) as fp:
            schema = yaml.safe_load(fp) or {}
    if os.path.exists(config_path):
        with open(config_path) as fp:
            values = yaml.safe_load(fp)
        values = {} if values is None else values  # ConfigAPI's default for no values
        if not isinstance(values, dict):
            raise RunnerError("Pack config %s must be a mapping" % config_path)
        try:
            # st2 stores the values as written: validation only decides whether they register,
            # and only a pack with a config schema has its config validated.
            if os.path.isfile(schema_path):
                loader.validate_config_against_schema(schema, values, config_path, pack)
        except loader.ConfigValidationError as e:
            raise RunnerError('Failed validating config for pack "%s" (%s):\n  %s'
                              % (pack, config_path, "\n  ".join(e.errors)))
        except jsonschema.SchemaError as e:
            raise RunnerError("config.schema.yaml is not a schema StackStorm accepts: %s"
                              % e.message)
    store = datastore if datastore is not None else MemoryDatastore()
    return loader.ContentPackConfigLoader(pack, schema, values, store, user).get_config()


class MemoryDatastore(object):
    """StackStorm's datastore in memory. Items are kept by scope and name as st2's database keeps
    them: an encrypted value as st2's hex ciphertext (AES-256-CBC and HMAC-SHA1 under this
    datastore's crypto_key, devtools/st2_crypto.py), and an item set with a TTL is gone once it
    expires (clock() seconds). `items` and `encrypted` hold the system scope, `user_items` and
    `user_encrypted` the user scope ("<user>:<name>"). Seam for a file-backed store: pass loaded
    items with the key they were encrypted with, and override save(), called after every
    change. set/get/delete are what `st2 key set/get/delete` do."""

    SCOPES = {"system": "st2kv.system", "st2kv.system": "st2kv.system",
              "user": "st2kv.user", "st2kv.user": "st2kv.user"}

    def __init__(self, items=None, encrypted=(), crypto_key=None, clock=None):
        self._crypto = _devtools_module("st2_crypto")
        self.crypto_key = crypto_key or self._crypto.AESKey.generate()
        self.clock = clock or time.time
        self.items, self.encrypted = dict(items or {}), set(encrypted)
        self.user_items, self.user_encrypted = {}, set()
        self.expires = {}  # (full scope, name): clock() time the item expires at
        # A workflow's actions share the datastore from several threads, as st2's API serves
        # concurrent executions.
        self._lock = threading.RLock()

    def save(self):
        pass

    def _table(self, scope):
        if scope not in self.SCOPES:
            raise ValueError('Scope "%s" is not valid. Allowed scopes are %s.'
                             % (scope, sorted(self.SCOPES)))
        if self.SCOPES[scope] == "st2kv.system":
            return self.SCOPES[scope], self.items, self.encrypted
        return self.SCOPES[scope], self.user_items, self.user_encrypted

    def _name(self, scope, name, user):
        if self.SCOPES.get(scope) == "st2kv.user":
            if not user:
                raise ValueError("A valid user must be specified for user key ref.")
            return "%s:%s" % (user, name)
        return name

    def expire(self):
        """Drop every item whose TTL has run out (st2's database does it on its own)."""
        with self._lock:
            now = self.clock()
            gone = [key for key, deadline in self.expires.items() if deadline <= now]
            for scope, name in gone:
                _, table, encrypted = self._table(scope)
                table.pop(name, None)
                encrypted.discard(name)
                del self.expires[(scope, name)]
            if gone:
                self.save()

    def set(self, name, value, ttl=None, encrypt=False, scope="system", user=None):
        # The API refuses what its KeyValuePairSetAPI schema does not allow.
        if not isinstance(value, str):
            raise ValueError("%r is not of type 'string'" % (value,))
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
            raise ValueError("%r is not of type 'integer'" % (ttl,))
        full, table, encrypted = self._table(scope)
        name = self._name(scope, name, user)
        with self._lock:
            self.expire()
            if encrypt:
                table[name] = self._crypto.symmetric_encrypt(self.crypto_key, value).decode()
                encrypted.add(name)
            else:
                table[name] = value
                encrypted.discard(name)
            if ttl:
                self.expires[(full, name)] = self.clock() + ttl
            else:
                self.expires.pop((full, name), None)
            self.save()
        return True

    def get(self, name, decrypt=False, scope="system", user=None):
        """The value; a secret's ciphertext unless decrypt (a plain value either way)."""
        _, table, encrypted = self._table(scope)
        name = self._name(scope, name, user)
        with self._lock:
            self.expire()
            value, secret = table.get(name), name in encrypted
        if value is not None and decrypt and secret:
            return self.decrypt(value)
        return value

    def delete(self, name, scope="system", user=None):
        full, table, encrypted = self._table(scope)
        name = self._name(scope, name, user)
        with self._lock:
            self.expire()
            found = table.pop(name, None) is not None
            encrypted.discard(name)
            self.expires.pop((full, name), None)
            self.save()
        return found

    def lookup(self, scope, name):
        """The stored value of a full name ("<user>:<name>" in user scope), as the config
        loader's st2kv lookups read it: ciphertext for a secret, None when absent."""
        _, table, _ = self._table(scope)
        with self._lock:
            self.expire()
            return table.get(name)

    def decrypt(self, ciphertext):
        """decrypt_kv: st2's errors for what is not ciphertext of this datastore's key."""
        return self._crypto.symmetric_decrypt(self.crypto_key, ciphertext)


class LocalActionService(object):
    """What st2's ActionService offers an action: datastore access local to pack and class,
    through the datastore API's rules (st2common/services/datastore.py)."""

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
        # st2 pages with [api] max_page_size (100) when no limit is given.
        start = (self._prefix if local else "") + (prefix or "")
        self._store.expire()
        items, encrypted = dict(self._store.items), set(self._store.encrypted)
        names = [k for k in sorted(items) if k.startswith(start)]
        names = names[offset or 0:(offset or 0) + (limit or 100)]
        return [types.SimpleNamespace(id=k, name=k, value=items[k], secret=k in encrypted,
                                      encrypted=k in encrypted, scope="st2kv.system")
                for k in names]

    def get_value(self, name, local=True, scope="system", decrypt=False):
        # Without decrypt, st2 hands out a secret's ciphertext.
        return self._store.get(self._key(name, local, scope), decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        # The API keeps strings; it refuses a ttl that is not an integer.
        return self._store.set(self._key(name, local, scope), str(value), ttl=ttl or None,
                               encrypt=encrypt)

    def delete_value(self, name, local=True, scope="system"):
        return self._store.delete(self._key(name, local, scope))


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


# Constants of StackStorm's python runner process protocol: devtools/action_process.py (the
# child, after st2's python_action_wrapper.py) prints its result between the delimiters.
ACTION_PROCESS = os.path.join(DEVTOOLS_DIR, "action_process.py")
# st2common/util/green/shell.py: the exit code st2 reports for an action it killed.
TIMEOUT_EXIT_CODE = -9
# python_runner.py: what the `env` runner parameter may not set.
BLACKLISTED_ENV_VARS = ("pythonpath",)
# Seconds an exited action's pipes may stay open (held by a process it left behind) before its
# output counts as complete. StackStorm would wait for that process to exit.
ORPHAN_PIPE_GRACE = 2.0
# MemoryDatastore was written for one caller at a time; action processes ask concurrently.
_DATASTORE_LOCK = threading.Lock()
# Action processes running now. Each has a process group of its own, which the terminal's
# Ctrl-C does not reach: _interrupt() kills them.
_RUNNING, _RUNNING_LOCK = set(), threading.Lock()


class Execution(tuple):
    """execute()'s (succeeded, result), with StackStorm's view of the same execution:
    .status ("succeeded", "failed" or "timeout") and .output, the python runner's result
    ({"result", "stdout", "stderr", "exit_code"}, plus "error" when it timed out; or the action
    runner's {"error", "traceback"} when the runner itself failed). .traceback_shown: the
    result's traceback already went to stderr while the action ran."""

    def __new__(cls, status, output, result, traceback_shown=False):
        self = super(Execution, cls).__new__(cls, (status == "succeeded", result))
        self.status, self.output, self.traceback_shown = status, output, traceback_shown
        return self


def _st2_import_root():
    """The directory st2common is imported from: StackStorm's, or the stand-in's."""
    _action_base_class()
    import st2common  # pylint: disable=import-outside-toplevel
    return os.path.dirname(os.path.dirname(os.path.abspath(st2common.__file__)))


def action_environment(pack_root=PACK_ROOT, env=None):
    """The environment python_runner.py gives an action process. The pack's virtualenv (here
    the one running this) comes first on PATH; PYTHONPATH is its lib and site-packages, then
    actions/lib, then this process's PYTHONPATH, then StackStorm's own packages
    (st2common.util.sandboxing.get_sandbox_python_path_for_python_action). The `env` runner
    parameter comes on top, but for PYTHONPATH, and then the ST2_ACTION_* variables."""
    site_packages = sysconfig.get_path("platlib")
    python_path = [os.path.dirname(site_packages), site_packages,
                   os.path.join(os.path.abspath(pack_root), "actions", "lib")]
    python_path += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    python_path.append(_st2_import_root())
    result = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        result["PATH"] = ":".join([os.path.join(sys.prefix, "bin")]
                                  + [p for p in result.get("PATH", "").split(":") if p])
    result["PYTHONPATH"] = ":".join(python_path)
    result.update({k: v for k, v in (env or {}).items()
                   if k.lower() not in BLACKLISTED_ENV_VARS})
    result.update(ST2_ACTION_PACK_NAME=load_pack_ref(pack_root),
                  ST2_ACTION_EXECUTION_ID=uuid.uuid4().hex[:24])
    return result


class _DatastoreServer(object):
    """The local runner's end of an action process's datastore socket (protocol: see
    devtools/action_process.py). Requests are answered by LocalActionService, local to the
    pack and the action's class; `raised` keeps what the action process said it raised."""

    def __init__(self, pack, datastore, log_level):
        self.pack, self.datastore, self.log_level = pack, datastore, log_level
        self.services, self.raised, self.pending = {}, None, b""

    def answer(self, line):
        process = _devtools_module("action_process")
        try:
            request = json.loads(line)
            method, kwargs = request["method"], dict(request.get("kwargs") or {})
            if method == process.RAISED:
                self.raised = kwargs
                return {"result": None}
            if method not in process.DATASTORE_METHODS:
                raise ValueError("The datastore has no method %r." % (method,))
            class_name = kwargs.pop("class_name")
            if class_name not in self.services:
                self.services[class_name] = LocalActionService(self.pack, class_name,
                                                               self.datastore, self.log_level)
            with _DATASTORE_LOCK:
                result = getattr(self.services[class_name], method)(**kwargs)
            if method == "list_values":
                result = [dict(vars(item)) for item in result]
            return {"result": result}
        except Exception as e:  # pylint: disable=broad-except
            return {"error": {"type": type(e).__name__, "message": str(e)}}

    def feed(self, data, sock):
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            sock.sendall(json.dumps(self.answer(line.decode("utf-8")),
                                    default=str).encode("utf-8") + b"\n")


def _kill_group(proc):
    # The action runs in a session of its own: SSH clients or shells it started die with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class _Lines(object):
    """One output stream of an action process: every byte kept, and every complete line but
    the result's (st2's make_read_and_store_stream_func skips those too) handed to `show`."""

    def __init__(self, show):
        self.show, self.data, self.partial = show, bytearray(), b""

    def feed(self, chunk):
        self.data += chunk
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        self._show(lines)

    def close(self):
        partial, self.partial = self.partial, b""
        self._show([partial] if partial else [])

    def _show(self, lines):
        delimiter = _devtools_module("action_process").ACTION_OUTPUT_RESULT_DELIMITER
        for raw in lines if self.show else ():
            line = raw.decode("utf-8", "replace")
            if delimiter not in line:
                self.show(line)

    def text(self):
        return bytes(self.data).decode("utf-8", "replace")


class _ActionProcess(object):
    """One action process and the ends of its pipes and datastore socket in this process."""

    def __init__(self, args, env, request, server, show_stdout, show_stderr):
        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(args + ["--datastore-fd", str(child_sock.fileno())],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env,
                                         start_new_session=True,
                                         pass_fds=(child_sock.fileno(),))
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self.sock, self.server = parent_sock, server
        self.stdout, self.stderr = _Lines(show_stdout), _Lines(show_stderr)
        self.streams = {self.proc.stdout.fileno(): self.stdout,
                        self.proc.stderr.fileno(): self.stderr}
        self.to_send = json.dumps(request, default=str).encode("utf-8") + b"\n"
        self.selector = selectors.DefaultSelector()
        for fd in self.streams:
            self.selector.register(fd, selectors.EVENT_READ)
        self.selector.register(parent_sock, selectors.EVENT_READ)
        self.selector.register(self.proc.stdin, selectors.EVENT_WRITE)
        with _RUNNING_LOCK:
            _RUNNING.add(self.proc)

    def pump(self, timeout, outputs_only=False):
        """Move what is ready within `timeout` seconds; False when nothing was."""
        ready = self.selector.select(timeout)
        for key, _ in ready:
            # BlockingIOError: a non-blocking end (eventlet patches them) not ready after all.
            try:
                if key.fd in self.streams:
                    data = os.read(key.fd, 65536)
                    if data:
                        self.streams[key.fd].feed(data)
                    else:
                        self.selector.unregister(key.fd)
                        self.streams[key.fd].close()
                elif outputs_only:
                    self.selector.unregister(key.fileobj)
                elif key.fileobj is self.sock:
                    data = self.sock.recv(65536)
                    if data:
                        self.server.feed(data, self.sock)
                    else:
                        self.selector.unregister(self.sock)
                else:
                    try:
                        written = os.write(key.fd, self.to_send[:65536])
                    except BlockingIOError:
                        continue
                    except OSError:  # it died before reading its request: stderr says why
                        written = len(self.to_send)
                    self.to_send = self.to_send[written:]
                    if not self.to_send:
                        self.selector.unregister(self.proc.stdin)
                        self.proc.stdin.close()
            except BlockingIOError:
                continue
        return bool(ready)

    def open_outputs(self):
        return any(fd in self.streams for fd in self.selector.get_map())

    def close(self):
        self.selector.close()
        if self.proc.poll() is None:
            _kill_group(self.proc)
        with _RUNNING_LOCK:
            _RUNNING.discard(self.proc)
        for handle in (self.proc.stdin, self.proc.stdout, self.proc.stderr, self.sock):
            handle.close()
        self.stdout.close()
        self.stderr.close()


def _run_process(args, env, request, timeout, server, show_stdout=None, show_stderr=None):
    """Run one action process to its end or its timeout, like st2's run_command():
    (exit code, stdout, stderr, timed out), the exit code -9 when it timed out. On timeout the
    process group is killed. All of it happens in the calling thread, so show_stdout and
    show_stderr (called per line, as lines come) run in the thread that runs the action."""
    action = _ActionProcess(args, env, request, server, show_stdout, show_stderr)
    proc, deadline = action.proc, time.monotonic() + timeout
    timed_out, exited_at = False, None
    try:
        while action.selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if now >= deadline and exited_at is None:
                timed_out = True
                break
            if exited_at is not None and now - exited_at >= ORPHAN_PIPE_GRACE:
                print("WARNING: %s exited but a process it started still holds its output; "
                      "StackStorm's python runner would wait for that process to exit"
                      % request["file_path"], file=sys.stderr)
                break
            action.pump(max(0.0, min(deadline - now, 0.5)))
        if not timed_out:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # it closed its output but runs on
                timed_out = True
        if timed_out:
            _kill_group(proc)
            # What it printed before it was killed is still in the pipes.
            while action.open_outputs() and action.pump(0.2, outputs_only=True):
                pass
    finally:
        action.close()
    return (TIMEOUT_EXIT_CODE if timed_out else proc.returncode, action.stdout.text(),
            action.stderr.text(), timed_out)


def runner_output(exit_code, stdout, stderr, timed_out, timeout):
    """(status, output) of an action process, as PythonRunner._get_output_values of st2
    v3.9.0 (contrib/runners/python_runner/python_runner/python_runner.py, Apache-2.0) makes
    them. ValueError where that raises (a status that is not a bool, a garbled result)."""
    delimiter = _devtools_module("action_process").ACTION_OUTPUT_RESULT_DELIMITER
    error = "Action failed to complete in %s seconds" % (timeout,) if timed_out else None
    if exit_code == _devtools_module("action_process").INVALID_STATUS_EXIT_CODE:
        raise ValueError(stderr)
    action_result = None
    if delimiter in stdout:
        split = stdout.split(delimiter)
        if len(split) != 3:
            raise ValueError("The result length should be 3, was %d." % len(split))
        action_result = split[1].strip()
        stdout = split[0] + split[2]
    if action_result:
        try:
            action_result = json.loads(action_result)
        except ValueError:
            pass  # st2 logs a warning and keeps the text
    status = None
    if action_result:
        if isinstance(action_result, dict):
            result, status = action_result.get("result"), action_result.get("status")
        else:
            match = re.search("'result': (.*?)$", action_result or "")
            result = match.groups()[0] if match else action_result
    else:
        result = "None"
    output = {"stdout": stdout, "stderr": stderr, "exit_code": exit_code, "result": result}
    if error:
        output["error"] = error
    if timed_out:
        return "timeout", output
    if exit_code == 0 and status is not False:
        return "succeeded", output
    return "failed", output


def _last_traceback(stderr):
    start = stderr.rfind("Traceback (most recent call last):")
    return stderr[start:] if start >= 0 else stderr


class _Live(object):
    """Lines written to sys.stdout or sys.stderr as they come (whatever they are then)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, line):
        stream = getattr(sys, self.name)
        stream.write(line + "\n")
        stream.flush()


def execute(meta, action_params, config=None, pack_root=PACK_ROOT, datastore=None,
            log_level=None, runner_params=None, stdout=_Live("stdout"),
            stderr=_Live("stderr")):
    """Run a python-script action the way StackStorm's python runner does and return an
    Execution: (succeeded, result) and st2's .status and .output.

    The action runs in a fresh interpreter (devtools/action_process.py, after st2's
    python_action_wrapper.py) with st2's sys.path, the parameters and the config on its stdin
    and the datastore (default: an empty MemoryDatastore) reached through this process. The
    runner parameters (default: the action's defaults; log_level overrides theirs) apply as in
    st2: `timeout` seconds after it started, its process group is killed and the execution
    times out; `env` adds environment variables. Each line it prints goes to stdout(line) and
    stderr(line) as it is printed (default: this process's; None: nowhere).

    result is what run() returned; for an action that raised, {"error": its message,
    "traceback"}; else (a timeout, an exit without result, the runner failing) .output."""
    defaults = {n: s["default"] for n, s in parameter_schemas(meta).items()
                if n in runner_parameters(meta) and s.get("default") is not None}
    runner_params = dict(defaults, **(runner_params or {}))
    if log_level:
        runner_params["log_level"] = log_level
    timeout = runner_params.get("timeout", RUNNER_PARAMETERS["timeout"]["default"])
    pack = load_pack_ref(pack_root)
    server = _DatastoreServer(pack, datastore if datastore is not None else MemoryDatastore(),
                              str(runner_params.get("log_level") or "debug").lower())
    try:
        if not meta.get("entry_point"):
            raise Exception('Action "%s" is missing entry_point attribute' % meta.get("name"))
        request = {"pack": pack, "parameters": action_params, "config": config or {},
                   "file_path": os.path.join(os.path.abspath(pack_root), "actions",
                                             meta["entry_point"]),
                   "log_level": server.log_level}
        exit_code, out, err, timed_out = _run_process(
            [sys.executable, "-u", ACTION_PROCESS],
            action_environment(pack_root, runner_params.get("env")), request, timeout, server,
            stdout, stderr)
        status, output = runner_output(exit_code, out, err, timed_out, timeout)
    except Exception as e:  # pylint: disable=broad-except
        # st2's action runner container: the execution fails with the runner's error.
        output = {"error": str(e),
                  "traceback": "".join(traceback.format_tb(e.__traceback__, 20))}
        return Execution("failed", output, output)
    if status == "timeout":
        return Execution(status, output, output)
    if _devtools_module("action_process").ACTION_OUTPUT_RESULT_DELIMITER in out:
        return Execution(status, output, output["result"])
    if server.raised and exit_code != 0:
        return Execution(status, output, {"error": server.raised.get("message"),
                                          "traceback": _last_traceback(err)},
                         traceback_shown=stderr is not None)
    return Execution(status, output, output)


def python_action_executor(config=None, pack_root=PACK_ROOT, datastore=None, echo=None):
    """execute(action_ref, input) for workflow_runner: validates the request for one of the
    pack's python actions and runs it with execute(); returns st2's status ("succeeded",
    "failed" or "timeout") and result: the python runner's {"result", "stdout", "stderr",
    "exit_code"} (+ "error" on a timeout; "result" is "None" when the action raised or was
    killed). RunnerError (a refused request) for anything else. With echo, each line the
    action prints is passed to echo(line) as it is printed, in the calling thread."""
    _action_base_class()  # import st2common (or the stand-in) before worker threads need it
    metadata = {}  # read once per run: parsing every action's YAML costs ~0.1 s a call

    def execute_action(ref, params):
        if ref not in metadata:
            metadata[ref] = load_action_metadata(ref, pack_root)
        meta = copy.deepcopy(metadata[ref])
        if meta.get("runner_type") != "python-script" or not meta.get("enabled", True):
            raise RunnerError('Action "%s" (runner %s) cannot run here.'
                              % (ref, meta.get("runner_type")))
        action_params, runner_params = prepare_parameters(meta, params, config)
        run = execute(meta, action_params, config, pack_root, datastore,
                      runner_params=runner_params, stdout=echo, stderr=None)
        return run.status, run.output

    # The workflow runner renders its child workflows' config_context defaults with it.
    execute_action.config = config
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
    if threading.current_thread() is not threading.main_thread():
        return workflow_runner.run_workflow(ref, action_params, execute_action, pack_root,
                                            progress)
    # The worker threads end only when their actions do: Ctrl-C ends the actions first.
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        return workflow_runner.run_workflow(ref, action_params, execute_action, pack_root,
                                            progress)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signum, frame):
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    signal.default_int_handler(signum, frame)


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
    prepare_parameters(meta, parameters or {})     # a refused request: before the config
    datastore = datastore if datastore is not None else MemoryDatastore()
    try:
        config = load_config(pack_root, config_path, datastore)
    except (RunnerError, OSError, yaml.YAMLError):
        raise
    except Exception as e:  # pylint: disable=broad-except
        # st2 loads the config when the runner starts: the execution fails with st2's error.
        return False, {"error": str(e), "traceback": traceback.format_exc()}
    action_params, runner_params = prepare_parameters(meta, parameters or {}, config)
    if meta["runner_type"] == "orquesta":
        result = run_workflow(ref, action_params, config, pack_root, datastore, progress)
        return result.succeeded, result.result
    return execute(meta, action_params, config, pack_root, datastore,
                   runner_params=runner_params)


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
        run = run_action(args.ref, params, args.config, args.pack_root, progress=print)
    except (RunnerError, OSError, yaml.YAMLError) as e:
        print("ERROR: %s" % e, file=sys.stderr)
        return 2
    succeeded, result = run
    if not succeeded and isinstance(result, dict) and result.get("traceback") \
            and not getattr(run, "traceback_shown", False):
        print(result["traceback"], file=sys.stderr)
    # A python action's own status: "timeout" when the runner killed it.
    print("status: %s" % getattr(run, "status", "succeeded" if succeeded else "failed"))
    print("result:\n%s" % textwrap.indent(json.dumps(result, indent=2, sort_keys=True), "  "))
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
