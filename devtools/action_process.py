"""The action's side of devtools/local_runner.py: one python action in a process of its own.

    python -u devtools/action_process.py --datastore-fd N   (request: one JSON line on stdin)

StackStorm's python runner starts a fresh interpreter per execution with
python_action_wrapper.py; this is that wrapper for the local runner. It follows
contrib/runners/python_runner/python_runner/python_action_wrapper.py of StackStorm v3.9.0
(Apache License 2.0, Copyright The StackStorm Authors): the same sys.path order, the same action
loading (st2common/util/loader.py register_plugin), the same ActionService methods, the same
handling of run()'s return value, and the result printed between st2's delimiters on stdout
for the parent to parse. An exception is not caught: the traceback goes to stderr and the
process exits 1, as in st2.

Where st2's wrapper reaches the datastore through the st2 API, this one asks its parent over
the socket --datastore-fd names: a JSON request per line ({"method", "kwargs"}), a JSON answer
per line ({"result"} or {"error": {"type", "message"}}). The parent answers with its own
LocalActionService, so every action of one local run shares one datastore.

The request on stdin: {"pack", "file_path", "parameters", "config", "log_level"}.
"""

# Few and cheap imports: this starts once per action execution, before the action's own.
import builtins
import importlib.util
import json
import math
import os
import sys
import sysconfig
import threading
import types

# st2common/constants/action.py
ACTION_OUTPUT_RESULT_DELIMITER = "%%%%%~=~=~=************=~=~=~%%%%"
# st2common/constants/runners.py
INVALID_STATUS_EXIT_CODE = 220
SYSTEM_SCOPE = "system"

INVALID_STATUS_ERROR_MESSAGE = """
If this is an existing action which returns a tuple with two items, it needs to be updated to
either:

1. Return a list instead of a tuple
2. Return a tuple where a first items is a status flag - (True, ('item1', 'item2'))

For more information, please see: https://docs.stackstorm.com/upgrade_notes.html#st2-v1-6
""".strip()

# Requests the parent answers; "_raised" tells it the message of the exception that ends us.
DATASTORE_METHODS = ("list_values", "get_value", "set_value", "delete_value")
RAISED = "_raised"


class RemoteError(RuntimeError):
    """A datastore error of the parent whose type is not a builtin exception."""


class _Parent(object):
    """The socket to the local runner: one request at a time, whatever thread asks."""

    def __init__(self, fd):
        self._fd = fd
        self._reader = open(fd, "rb", closefd=False)  # a socket fd reads like a pipe
        self._lock = threading.Lock()

    def call(self, method, **kwargs):
        request = json.dumps({"method": method, "kwargs": kwargs}).encode("utf-8") + b"\n"
        with self._lock:
            while request:
                request = request[os.write(self._fd, request):]
            line = self._reader.readline()
        if not line:
            raise ConnectionError("the local runner closed the datastore connection")
        answer = json.loads(line.decode("utf-8"))
        error = answer.get("error")
        if error:
            raise _builtin_exception(error["type"])(error["message"])
        return answer.get("result")


def _builtin_exception(name):
    """The builtin exception class of that name (ValueError for a refused key, ...)."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return RemoteError


class _DatastoreService(object):
    """What st2's ActionDatastoreService offers, answered by the parent's datastore."""

    def __init__(self, parent, class_name):
        self._parent, self._class_name = parent, class_name

    def _call(self, method, **kwargs):
        return self._parent.call(method, class_name=self._class_name, **kwargs)

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return [types.SimpleNamespace(**item) for item in self._call(
            "list_values", local=local, prefix=prefix, limit=limit, offset=offset)]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self._call("get_value", name=name, local=local, scope=scope, decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        # st2's client sends str(value), whatever the action passed.
        return self._call("set_value", name=name, value=str(value), ttl=ttl, local=local,
                          scope=scope, encrypt=encrypt)

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self._call("delete_value", name=name, local=local, scope=scope)


class ActionService(object):
    """python_action_wrapper.ActionService: the datastore methods an action may call."""

    def __init__(self, action_wrapper, parent):
        self._action_wrapper = action_wrapper
        self._parent = parent
        self._datastore_service = None

    @property
    def datastore_service(self):
        if not self._datastore_service:
            self._datastore_service = _DatastoreService(self._parent,
                                                        self._action_wrapper._class_name)
        return self._datastore_service

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(local=local, prefix=prefix, limit=limit,
                                                  offset=offset)

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self.datastore_service.get_value(name=name, local=local, scope=scope,
                                                decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        return self.datastore_service.set_value(name=name, value=value, ttl=ttl, local=local,
                                                scope=scope, encrypt=encrypt)

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self.datastore_service.delete_value(name=name, local=local, scope=scope)


def sandbox_sys_path():
    """python_action_wrapper's own fix-ups: its directory leaves sys.path (here devtools/, whose
    modules an action under st2 cannot import) and the pack virtualenv's site-packages goes
    first. PYTHONPATH, set by the parent as st2 sets it, supplies the rest."""
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or os.curdir) == here:
        sys.path.pop(0)
    sys.path.insert(0, sysconfig.get_path("platlib"))


def load_action_class(file_path, action_base):
    """st2common.util.loader.register_plugin: the file's directory is appended to sys.path and
    the module loaded from its path. Stricter than st2, which takes the first class by name
    that implements run(): exactly one Action subclass must be defined there."""
    plugin_dir = os.path.dirname(os.path.realpath(file_path))
    if not any(plugin_dir in (path, path + os.sep) for path in sys.path):
        sys.path.append(plugin_dir)
    module_name = os.path.splitext(os.path.basename(file_path))[0]
    spec = importlib.util.spec_from_file_location(module_name, file_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [c for _, c in sorted(vars(module).items())
               if isinstance(c, type) and c.__module__ == module.__name__
               and issubclass(c, action_base) and not getattr(c, "__abstractmethods__", None)]
    if len(classes) != 1:
        raise RuntimeError('File "%s" must define exactly one Action class, found %s (st2 '
                           'would take the first by name)' % (file_path, classes))
    return classes[0]


def _orjson_types(value):
    """What orjson.dumps (st2's encoder) makes of a value, in json's terms: datetimes, UUIDs,
    enums and dataclasses become JSON values; NaN and infinities null; a dict key that is not a
    string and an integer beyond 64 bits are refused (TypeError), as orjson refuses them."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -2 ** 63 <= value < 2 ** 64:
            raise TypeError("Integer exceeds 64-bit range")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("Dict key must be str")
        return {k: _orjson_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_orjson_types(v) for v in value]
    # A value of these types exists only if its module was imported: look there, not import.
    modules = sys.modules
    dates = getattr(modules.get("datetime"), "date", None), getattr(modules.get("datetime"),
                                                                    "time", None)
    if any(kind and isinstance(value, kind) for kind in dates):  # datetime is a date
        return value.isoformat()
    uuid_type = getattr(modules.get("uuid"), "UUID", None)
    if uuid_type and isinstance(value, uuid_type):
        return str(value)
    enum_type = getattr(modules.get("enum"), "Enum", None)
    if enum_type and isinstance(value, enum_type):
        return _orjson_types(value.value)
    dataclasses = modules.get("dataclasses")
    if dataclasses and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _orjson_types({f.name: getattr(value, f.name)
                              for f in dataclasses.fields(value)})
    raise TypeError("Type is not JSON serializable: %s" % type(value).__name__)


def dumps(value):
    """orjson.dumps where it is installed (as in st2's virtualenv), else its equivalent."""
    try:
        import orjson  # pylint: disable=import-outside-toplevel
    except ImportError:
        return json.dumps(_orjson_types(value), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
    return orjson.dumps(value)


def run(request, parent):
    """PythonActionWrapper.run(): load, instantiate, run, print the result."""
    from st2common.runners.base_action import Action  # pylint: disable=import-outside-toplevel
    from st2common.runners.utils import (  # pylint: disable=import-outside-toplevel
        get_action_class_instance)

    wrapper = types.SimpleNamespace(_pack=request["pack"], _class_name=None,
                                    _log_level=request.get("log_level") or "debug")
    file_path = request["file_path"]
    try:
        action_cls = load_action_class(file_path, Action)
    except Exception as e:
        msg = ('Failed to load action class from file "%s" (action file most likely doesn\'t '
               "exist or contains invalid syntax): %s" % (file_path, e))
        import traceback  # pylint: disable=import-outside-toplevel
        raise type(e)(msg + "\n\n" + traceback.format_exc())
    wrapper._class_name = action_cls.__name__
    action = get_action_class_instance(action_cls=action_cls, config=request.get("config") or {},
                                       action_service=ActionService(wrapper, parent))
    output = action.run(**(request.get("parameters") or {}))

    if isinstance(output, tuple) and len(output) == 2:
        action_status, action_result = output
    else:
        action_status, action_result = None, output
    action_output = {"result": action_result, "status": None}
    if action_status is not None and not isinstance(action_status, bool):
        sys.stderr.write("Status returned from the action run() method must either be True or "
                         "False, got: %s\n" % (action_status,))
        sys.stderr.write(INVALID_STATUS_ERROR_MESSAGE)
        sys.exit(INVALID_STATUS_EXIT_CODE)
    if action_status is not None:
        action_output["status"] = action_status
        try:
            dumps(action_output["result"])
        except (TypeError, ValueError):
            action_output["result"] = str(action_output["result"])
    try:
        print_output = dumps(action_output)
    except Exception:  # pylint: disable=broad-except
        print_output = str(action_output).encode("utf-8")
    sys.stdout.buffer.write(ACTION_OUTPUT_RESULT_DELIMITER.encode("utf-8"))
    sys.stdout.buffer.write(print_output + b"\n")
    sys.stdout.buffer.write(ACTION_OUTPUT_RESULT_DELIMITER.encode("utf-8"))
    sys.stdout.flush()


def main(argv):
    if len(argv) != 2 or argv[0] != "--datastore-fd":
        sys.exit("usage: action_process.py --datastore-fd FD  (the request on stdin)")
    sandbox_sys_path()
    # A parent that eventlet monkey-patched (st2tests does) hands its pipes and socket over in
    # non-blocking mode, where a read before the data arrives looks like the end of it.
    for fd in (0, 1, 2, int(argv[1])):
        os.set_blocking(fd, True)
    parent = _Parent(int(argv[1]))

    def report(exc_type, exc, tb):
        # The parent keeps the message for `./dialog-local run`; st2's result is unchanged.
        try:
            parent.call(RAISED, type=exc_type.__name__, message=str(exc))
        except Exception:  # pylint: disable=broad-except
            pass
        sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = report
    request = json.loads(sys.stdin.readline())
    run(request, parent)


if __name__ == "__main__":
    main(sys.argv[1:])
