"""Why something failed, in one line an operator can act on, whatever shape StackStorm stored.

Two users:
- dialog.explain_failure: a workflow task that did not succeed. StackStorm's result of an action
  execution has one of these shapes (contrib/runners/python_runner/python_runner.py,
  st2common/services/workflows.py in st2 3.9):
    returned error  {"result": {"error": ...}, "stdout", "stderr", "exit_code": 0}
    raised          {"result": "None", "stderr": "Traceback ...", "exit_code": 1}
    timeout         {"result": "None", "error": "Action failed to complete in N seconds",
                     "exit_code": -9, ...}
    a subworkflow   {"output": {...}, "errors": [{"message": ...}, ...]}
  and a with-items task's result() is a list of those in item order, None for an item that
  never ran.
- DialogAction's reports_errors: an exception the pack can foresee (SSH, connection, provider
  client, HTTP, timeout) that got past the code closest to it becomes a DialogError naming the
  host or deployment.
Every text from outside goes through a scrubber first: credentials of the pack config and the
deployment's secrets never reach a result, a chat channel or a log.
"""

import re

from lib.errors import DialogError, ProviderError, ResourceFailed
from lib.profiles import NESTED_SECRETS, REDACTED, SECRET_FIELDS

# Profile fields whose values are credentials (the key text is multi-line).
PROFILE_SECRETS = SECRET_FIELDS + ("ssh_private_key",)
MAX_REASON = 600
# Secrets this short would also match ordinary words.
MIN_SECRET = 6
# Credentials with a recognisable shape, for text that quotes one the pack does not know of:
# (pattern, whether its first group is kept before the mask).
CREDENTIAL_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                re.S), False),
    (re.compile(r"\bdop_v1_[0-9a-f]{20,}\b"), False),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), False),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), True),
    (re.compile(r"(?i)(\b\w*(?:password|passwd|secret|token)\w*=)[^\s&\"',;]{4,}"), True),
    (re.compile(r"(?i)(\"\w*(?:password|passwd|secret|token)\w*\"\s*:\s*\")[^\"]{4,}"), True),
]
# A traceback's frames and notes: never the reason itself.
_NOISE = re.compile(r"^(Traceback \(most recent call last\):|File \"|During handling of the "
                    r"above exception|The above exception was the direct cause|[\^~\s]*$)")
# st2's python runner logs an action's self.logger as "st2.actions.python.<Class>: LEVEL    text"
# (st2common.log.getLogger adds the "st2." to get_logger_for_python_runner_action's name).
_LOG_PREFIX = re.compile(r"^(?:st2\.)?actions\.python\.\S+?\s*:\s*(?:DEBUG|INFO|WARNING|ERROR|"
                         r"CRITICAL|AUDIT)\s+")

# Exceptions the pack can foresee, by the module their class comes from: (prefix, what failed,
# error class). The libraries are not imported here, so none of them is needed to run this.
FORESEEN_MODULES = [
    ("paramiko", "SSH failed", ProviderError),
    ("fabric", "SSH failed", ProviderError),
    ("invoke", "remote command failed", ResourceFailed),
    ("botocore", "the AWS request failed", ProviderError),
    ("boto3", "the AWS request failed", ProviderError),
    ("azure.core", "the DigitalOcean API request failed", ProviderError),
    ("pydo", "the DigitalOcean API request failed", ProviderError),
    ("requests", "the HTTP request failed", ProviderError),
    ("urllib3", "the HTTP request failed", ProviderError),
]


# --- scrubbing --------------------------------------------------------------------------------

def secret_values(config=None, deployment_secrets=None):
    """Every credential of the pack config's profiles and every value of a deployment's
    secrets, as texts to remove (multi-line values also line by line)."""
    values = []
    for profile in ((config or {}).get("profiles") or {}).values():
        for field in PROFILE_SECRETS:
            if isinstance(profile, dict) and profile.get(field):
                values.append(str(profile[field]))
        for outer, inner in NESTED_SECRETS:    # object_storage's secret key
            nested = profile.get(outer) if isinstance(profile, dict) else None
            if isinstance(nested, dict) and nested.get(inner):
                values.append(str(nested[inner]))
    for value in (deployment_secrets or {}).values():
        if value:
            values.append(str(value))
    lines = [line.strip() for value in values if "\n" in value for line in value.splitlines()]
    return values + lines


def scrubber(values=()):
    """A function that replaces each of `values` (and credential-shaped text) with a mask."""
    known = sorted({v for v in values if v and len(v) >= MIN_SECRET}, key=len, reverse=True)

    def scrub(text):
        text = str(text)
        for value in known:
            text = text.replace(value, REDACTED)
        for pattern, keep in CREDENTIAL_PATTERNS:
            text = pattern.sub((lambda m: m.group(1) + REDACTED) if keep else REDACTED, text)
        return text

    return scrub


# --- one line of text -------------------------------------------------------------------------

def one_line(text, limit=MAX_REASON):
    """Text on one line (a chat message, a table cell), at most `limit` characters."""
    text = " ".join(str(text).split())
    # Orquesta evaluates a published string again when it holds an expression.
    text = text.replace("<%", "< %").replace("{{", "{ {").replace("{%", "{ %")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def last_meaningful_line(text):
    """The last line of program output that says something: for a traceback its exception
    line, for a log line its message. None when there is none."""
    for line in reversed(str(text or "").splitlines()):
        stripped = line.strip()
        if not stripped or _NOISE.match(stripped) or line.startswith("    "):
            continue
        return _LOG_PREFIX.sub("", stripped)
    return None


# --- why one execution failed -----------------------------------------------------------------

def _text(value):
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value if v)
    return str(value) if value not in (None, "") else None


def reason(result):
    """Why one execution did not succeed: (kind, text, input error or not).

    kind: "error" (the action returned one), "runner" (the runner's own error, a timeout
    above all), "crashed" (a traceback on stderr), "workflow" (a subworkflow's failure),
    "unknown". The shape is checked before any part of it is read."""
    if isinstance(result, str):
        line = last_meaningful_line(result)
        return ("unknown", line, False) if line else ("unknown", None, False)
    if not isinstance(result, dict):
        return "unknown", None, False
    value = result.get("result")
    if isinstance(value, dict) and _text(value.get("error")):
        return "error", _text(value["error"]), bool(value.get("field"))
    if _text(result.get("error")):
        text = _text(result["error"])
        last = last_meaningful_line(result.get("stdout"))
        if last:
            text += "; its last output: %s" % last
        return "runner", text, False
    if "output" in result or "errors" in result:
        output = result.get("output")
        failure = _text(output.get("failure")) if isinstance(output, dict) else None
        if failure:
            return "workflow", failure, False
        errors = result.get("errors")
        messages = [e.get("message") for e in errors if isinstance(e, dict)] \
            if isinstance(errors, list) else []
        messages = [str(m) for m in messages if m]
        if messages:
            return "workflow", "; ".join(messages), False
        return "workflow", None, False
    line = last_meaningful_line(result.get("stderr"))
    if line:
        return "crashed", line, False
    exit_code = result.get("exit_code")
    if isinstance(exit_code, int) and exit_code != 0:
        return "crashed", "exited with code %d and wrote nothing on stderr" % exit_code, False
    return "unknown", None, False


def succeeded(result):
    """True for the result of an execution that succeeded (a with-items task gives no item
    statuses, only results: one without any sign of failure succeeded)."""
    if not isinstance(result, dict):
        return False
    value = result.get("result")
    if isinstance(value, dict) and value.get("error"):
        return False
    if result.get("error") or result.get("errors"):
        return False
    if "output" in result:
        return True
    if "succeeded" in result:  # the shell runners' shape
        return bool(result["succeeded"])
    code = result.get("exit_code", result.get("return_code"))
    return value != "None" and code in (0, None)


def _name(item):
    if isinstance(item, dict):
        return str(item.get("name") or item.get("host") or "")
    return str(item) if item is not None else ""


def _describe(kind, text):
    if text is None:
        return "failed, and StackStorm recorded no reason (st2 execution get shows the run)"
    if kind == "crashed":
        return "crashed: %s" % text
    return text


def _with_host(host, text):
    # Most of the pack's own errors begin with the host already.
    if not host or text.startswith(host):
        return text
    return "%s: %s" % (host, text)


def explain(task, result=None, results=None, items=None, host=None, scrub=None):
    """One line on why `task` failed: "<task>: [<host>: ]<reason>", a with-items task's failed
    items joined with "; ". An error about the operator's input (it names its field) is
    returned as the action gave it, so that it reads the same as the action's own answer.

    Returns {"failure": text, "failures": [{"host", "kind", "reason"}]}."""
    scrub = scrub or scrubber()
    failures = []
    if isinstance(results, list):
        names = list(items) if isinstance(items, list) else []
        for index, item_result in enumerate(results):
            if item_result is None or succeeded(item_result):
                continue
            kind, text, _ = reason(item_result)
            name = _name(names[index]) if index < len(names) else "item %d" % index
            failures.append({"host": name, "kind": kind,
                             "reason": one_line(scrub(_describe(kind, text)))})
        if not failures:
            return {"failure": one_line("%s: failed, and none of its %d items says why"
                                        % (task, len(results))), "failures": []}
        text = "; ".join(_with_host(f["host"], f["reason"]) for f in failures)
        return {"failure": one_line("%s: %s" % (task, text), 2 * MAX_REASON),
                "failures": failures}
    kind, text, input_error = reason(result)
    described = one_line(scrub(_describe(kind, text)))
    failures.append({"host": host, "kind": kind, "reason": described})
    if input_error:
        return {"failure": described, "failures": failures}
    return {"failure": one_line("%s: %s" % (task, _with_host(host, described)), 2 * MAX_REASON),
            "failures": failures}


# --- exceptions the pack can foresee ----------------------------------------------------------

def _origin(exc):
    for cls in type(exc).__mro__:
        module = cls.__module__ or ""
        for prefix, what, error in FORESEEN_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                return what, error
    return None


def foreseen_error(exc, where, scrub=None):
    """The DialogError to report for `exc`, or None when it is not one the pack foresees (a
    bug: its traceback is worth more than a summary). `where` names the host or resource."""
    if isinstance(exc, DialogError):
        return exc
    origin = _origin(exc)
    if origin is None:
        if isinstance(exc, TimeoutError):
            origin = ("timed out", ResourceFailed)
        elif isinstance(exc, (ConnectionError, EOFError)):
            origin = ("the connection failed", ProviderError)
        elif isinstance(exc, OSError):
            origin = ("a system call failed", ProviderError)
        else:
            return None
    what, error = origin
    detail = str(exc).strip() or "no details"
    text = "%s: %s: %s: %s" % (where, what, type(exc).__name__, detail)
    return error(one_line((scrub or scrubber())(text)))
