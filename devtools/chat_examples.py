#!/usr/bin/env python3
"""The pack's ChatOps answers, rendered the way StackStorm renders them, for the README.

    python3 devtools/chat_examples.py           # print the README's block of example answers
    python3 devtools/chat_examples.py --write   # replace that block in README.md

What happens to a chat command in st2, and which part of it this module reproduces:

1. st2api (/aliasexecution) extracts the parameters with the alias's format (st2common's
   action_alias_utils: the real module when StackStorm is installed, else the stand-in copy in
   st2_standin), adds the alias's immutable_parameters (rendered with the chat user and
   channel; typing one of them is refused), casts the values to the action's types and
   schedules the execution: alias_execution().
2. It answers at once with the alias's ack.format, rendered by st2common.util.jinja's
   render_values: undefined names are errors: ack_message().
3. When the execution ends, the chatops pack's format_execution_result renders result.format
   in a sandboxed environment where undefined names render empty, and result.extra with
   render_values: result_message().
4. hubot-stackstorm posts the part before "{~}" as plain text and the rest as a Slack
   attachment: split_message().

The rendering helpers follow st2common/st2common/util/jinja.py and casts.py, and
contrib/chatops/actions/format_execution_result.py (Copyright 2020 The StackStorm Authors,
Copyright 2019 Extreme Networks, Inc.; Apache License 2.0). st2's own jinja filters (to_json_string,
regex_replace, ...) are not registered: the aliases use plain jinja2 only, and a template that
used one of those would fail here.

The sample results are built from the pack's code (planner, renderer, endpoints, datastore
keys) in the shapes the actions and workflows return; tests/test_aliases.py checks those shapes
against the real actions.
"""

import argparse
import ast
import copy
import glob
import json
import os
import sys
import traceback
import types

import jinja2
import jinja2.sandbox
import paramiko
import yaml

DEVTOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(DEVTOOLS_DIR)
for _path in (DEVTOOLS_DIR, os.path.join(PACK_ROOT, "actions"),
              os.path.join(PACK_ROOT, "actions", "lib")):
    if _path not in sys.path:
        sys.path.append(_path)

import local_runner  # noqa: E402
from lib import failures  # noqa: E402
from lib.deployment_record import record_key, unknown_deployment  # noqa: E402
from lib.deployment_secrets import GENERATORS, PAIRED, datastore_key  # noqa: E402
from lib.errors import InputError  # noqa: E402
from lib.operations import endpoints  # noqa: E402
from lib.planner import build_plan  # noqa: E402
from lib.render import render_host  # noqa: E402
from lib.scaling import check_role  # noqa: E402
from lib.stages import dependencies, start_order  # noqa: E402

README = os.path.join(PACK_ROOT, "README.md")
MARK_START = "<!-- chat-examples:start -->"
MARK_END = "<!-- chat-examples:end -->"
TROUBLE_START = "<!-- troubleshooting:start -->"
TROUBLE_END = "<!-- troubleshooting:end -->"
PRETEXT_DELIMITER = "{~}"

# What the examples run as: the chat user and channel hubot passes, fixed execution ids.
CHAT_USER = "alice"
CHAT_CHANNEL = "#dialog-ops"
ST2_USER = "chatops_bot"
ALIAS_ID = "65f0c0ffee0000000000a11a"

# The renderer needs images and secrets to name each host's checks; nothing of them is shown.
SAMPLE_IMAGES = {"dialog_server": "registry.example.com/dialog/server:2.5",
                 "web_app": "registry.example.com/dialog/web-app:2.5",
                 "dashboard": "registry.example.com/dialog/dashboard:2.5",
                 "push": "registry.example.com/dialog/push:2.5"}
SAMPLE_SECRETS = dict({name: "sample-" + name for name in GENERATORS},
                      **{name: "sample-" + name for names in PAIRED for name in names})

# What the probe (lib/health.py) reports for a passing check of each kind.
PASSING_DETAIL = {"http": "HTTP 200", "tcp": "connected", "stun": "binding success",
                  "exec": "accepting connections"}


# --- st2's jinja rendering -------------------------------------------------------------------

def jinja_environment(allow_undefined=False):
    """st2common.util.jinja.get_jinja_environment, without st2's custom filters."""
    undefined = jinja2.Undefined if allow_undefined else jinja2.StrictUndefined
    env = jinja2.sandbox.SandboxedEnvironment(  # nosec: the same sandbox st2 renders in
        undefined=undefined, trim_blocks=True, lstrip_blocks=True)
    env.tests["in"] = lambda item, list: item in list
    return env


def render_values(mapping=None, context=None, allow_undefined=False):
    """st2common.util.jinja.render_values: each value rendered as a template; dicts and lists
    go through JSON and back, so their rendered text must stay valid JSON."""
    if not context or not mapping:
        return mapping
    super_context = {"__context": context}
    super_context.update(context)
    env = jinja_environment(allow_undefined=allow_undefined)
    rendered_mapping = {}
    for key, value in mapping.items():
        reverse_json_dumps = False
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
            reverse_json_dumps = True
        elif not isinstance(value, str):
            value = str(value)
        rendered = env.from_string(value).render(super_context)
        if rendered == value:
            rendered_mapping[key] = mapping[key]
            continue
        rendered_mapping[key] = json.loads(rendered) if reverse_json_dumps else rendered
    return rendered_mapping


# --- st2api's alias execution ----------------------------------------------------------------

def load_aliases(pack_root=PACK_ROOT):
    """{name: alias} of aliases/*.yaml."""
    aliases = {}
    for path in sorted(glob.glob(os.path.join(pack_root, "aliases", "*.yaml"))):
        with open(path, encoding="utf-8") as handle:
            alias = yaml.safe_load(handle)
        aliases[alias["name"]] = alias
    return aliases


def representations(alias):
    """The format strings st2 matches, in order (ActionAliasDB.get_format_strings)."""
    found = []
    for item in alias.get("formats") or []:
        if isinstance(item, dict) and item.get("representation"):
            found.extend(item["representation"])
        else:
            found.append(item)
    return found


def alias_utils():
    """st2common.models.utils.action_alias_utils: StackStorm's, else the stand-in's."""
    try:
        from st2common.models.utils import action_alias_utils
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] == "st2common"]:
            del sys.modules[name]
        sys.path.insert(0, local_runner.STANDIN_PATH)
        from st2common.models.utils import action_alias_utils
    return action_alias_utils


def extract(representation, command):
    """The parameters st2 extracts, or None when the command does not match."""
    utils = alias_utils()
    parse_error = sys.modules["st2common.exceptions.content"].ParseException
    try:
        return utils.extract_parameters(format_str=representation, param_stream=command)
    except parse_error:
        return None


def registered_alias(alias):
    """The alias as st2's AliasesRegistrar stores it: validated with ActionAliasAPI's schema,
    converted to its DB object (StackStorm's classes, else the stand-in's)."""
    alias_utils()  # puts the stand-in on the path where StackStorm is not installed
    from st2common.models.api.action import ActionAliasAPI
    alias_api = ActionAliasAPI(**copy.deepcopy(alias))
    alias_api.validate()
    return ActionAliasAPI.to_model(alias_api)


def inject_immutable_parameters(alias, params, action_context):
    """st2api's step after the extraction: action_alias_utils.inject_immutable_parameters
    (StackStorm's, else the stand-in's, which has no datastore for st2kv) on one execution."""
    return alias_utils().inject_immutable_parameters(
        action_alias_db=registered_alias(alias), multiple_execution_parameters=[dict(params)],
        action_context=dict(action_context))[0]


def _cast_array(value):
    # st2api's CAST_OVERRIDES for alias executions: a list stays, text is split at commas.
    if isinstance(value, list):
        return value
    return [v.strip() for v in value.split(",")]


def _cast_object(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def _cast_boolean(value):
    if isinstance(value, str):
        return ast.literal_eval(value.capitalize())
    return value


def _cast_string(value):
    if value is None or isinstance(value, str):
        return value
    raise ValueError('Value "%s" must either be a string or None. Got "%s".'
                     % (value, type(value).__name__))


# st2common.util.casts.CASTS with st2api's array override.
CASTS = {"array": _cast_array, "boolean": _cast_boolean, "integer": int, "number": float,
         "object": _cast_object, "string": _cast_string}


def cast_parameters(meta, params):
    """action_param_utils.cast_params: every value with a typed schema is cast, None too."""
    schemas = local_runner.parameter_schemas(meta)
    cast = dict(params)
    for name, value in params.items():
        kind = (schemas.get(name) or {}).get("type")
        if kind not in CASTS:
            continue
        try:
            cast[name] = CASTS[kind](value)
        except Exception as exc:
            raise ValueError('Failed to cast value "%s" (type: %s) for parameter "%s" of type '
                             '"%s": %s. Perhaps the value is of an invalid type?'
                             % (value, type(value).__name__, name, kind, exc))
    return cast


def alias_execution(alias, command, execution_id="65f0c0ffee0000000000d001",
                    pack_root=PACK_ROOT):
    """The execution st2api schedules for a chat command (status "requested"): the first
    matching representation's parameters, immutable ones added, cast. ValueError when the
    alias does not match or st2 would refuse the parameters."""
    for representation in representations(alias):
        params = extract(representation, command)
        if params is not None:
            break
    else:
        raise ValueError('Command "%s" matches no format of alias %s' % (command, alias["name"]))
    # st2api's context: action_alias_ref is reference.get_ref_from_model's {"id", "name"}.
    context = {"action_alias_ref": {"id": ALIAS_ID, "name": alias["name"]},
               "api_user": CHAT_USER, "user": ST2_USER, "source_channel": CHAT_CHANNEL}
    params = inject_immutable_parameters(alias, params, context)
    meta = local_runner.load_action_metadata(alias["action_ref"], pack_root)
    params = cast_parameters(meta, params)
    return {"id": execution_id, "status": "requested", "action": {"ref": alias["action_ref"]},
            "runner": {"name": meta["runner_type"]}, "parameters": params, "context": context,
            "result": {}}


def ack_message(alias, execution):
    """st2api's acknowledgement: ack.format rendered with the scheduled execution (an API
    object: attributes, not keys) and the alias; undefined names are errors."""
    scheduled = types.SimpleNamespace(**execution)
    return render_values({"alias": alias["ack"]["format"]},
                         {"execution": scheduled, "actionalias": alias})["alias"]


def result_message(alias, execution, allow_undefined=True):
    """format_execution_result: (message, extra) for the finished execution. st2 renders the
    message with allow_undefined; the tests also render it strictly to catch names that do
    not exist."""
    context = {"execution": execution, "alias": alias}
    extra = None
    result = alias.get("result") or {}
    if "extra" in result:
        extra = render_values(result["extra"], context)
    env = jinja_environment(allow_undefined=allow_undefined)
    return env.from_string(result["format"]).render(context), extra


def split_message(message):
    """hubot-stackstorm's splitMessage: (plain text, attachment text)."""
    parts = message.split(PRETEXT_DELIMITER)
    if len(parts) > 1:
        return parts[0], parts[1]
    return "", parts[0]


def finished(execution, status, result):
    """The execution as the chatops pack reads it when it has ended."""
    return dict(copy.deepcopy(execution), status=status, result=result)


def python_result(value, stderr="", exit_code=0, error=None, stdout=""):
    """What the python runner stores: run()'s second value under "result"."""
    result = {"result": value, "stdout": stdout, "stderr": stderr, "exit_code": exit_code}
    if error:
        result["error"] = error
    return result


def workflow_result(output, errors=None):
    """What the orquesta runner stores: the workflow's output, and its errors when it failed."""
    result = {"output": output}
    if errors is not None:
        result["errors"] = errors
    return result


# --- samples from the pack's code ------------------------------------------------------------

def sample_inventory(plan):
    """Hosts as a provider reports them, at documentation addresses: 10.0.0.x inside,
    203.0.113.x outside, floating addresses 198.51.100.x on the first host of their group."""
    hosts, public = [], iter(range(10, 250))
    for number, host in enumerate(plan["hosts"], 1):
        hosts.append({"name": host["name"], "group": host["group"], "index": host["index"],
                      "roles": list(host["roles"]), "provider_id": "i-0sample%04d" % number,
                      "size": host["size"], "state": "running",
                      "private_address": "10.0.0.%d" % (number + 10),
                      "public_addresses": ["203.0.113.%d" % next(public)
                                           for _ in range(host["public_ips"])],
                      "volumes": []})
    by_name = {h["name"]: h for h in hosts}
    for number, floating in enumerate(plan["floating_ips"], 1):
        by_name[floating["hosts"][0]]["public_addresses"].append("198.51.100.%d" % number)
    return hosts


def deployment_context(plan, hosts):
    """What render_host needs (DialogAction.deployment_context's shape)."""
    return {"deployment": plan["deployment"], "tier": plan["tier"],
            "provider": plan["provider"], "with_storage": plan["with_storage"],
            "hosts": hosts, "secrets": dict(SAMPLE_SECRETS), "images": dict(SAMPLE_IMAGES)}


def probe_results(rendered, failing=None):
    """The probe's results for one host ({"name", "role", "ok", "detail"} per check, as
    lib.health.wait_checks returns them); `failing` maps a check name to its detail."""
    failing = failing or {}
    results = []
    for check in rendered["checks"]:
        ok = check["name"] not in failing
        if ok and check["kind"] == "cassandra":
            detail = "%s is UN" % check["address"]
        else:
            detail = PASSING_DETAIL.get(check["kind"], "ok") if ok else failing[check["name"]]
        results.append({"name": check["name"], "role": check["role"], "ok": ok,
                        "detail": detail})
    return results


def ssh_failure(host, reason, user="root"):
    """lib.bootstrap.connect's error for a host it cannot reach at its private address."""
    return "%s@%s:22: cannot connect: %s" % (user, host["private_address"], reason)


def status_result(plan, hosts, failing=None, unreachable=None):
    """dialog.status's result for the hosts: `failing` {host: {check: detail}}, `unreachable`
    {host: reason}."""
    failing, unreachable = failing or {}, unreachable or {}
    context = deployment_context(plan, hosts)
    checked = []
    for host in hosts:
        record = {"name": host["name"], "roles": host["roles"],
                  "private_address": host.get("private_address"),
                  "public_addresses": host.get("public_addresses") or []}
        if host["name"] in unreachable:
            record.update(checks=[], healthy=False,
                          error=ssh_failure(host, unreachable[host["name"]]))
        else:
            checks = probe_results(render_host(context, host["name"]),
                                   failing.get(host["name"]))
            record.update(checks=checks, healthy=all(c["ok"] for c in checks), error=None)
        checked.append(record)
    return {"deployment": plan["deployment"], "provider": plan["provider"],
            "healthy": bool(checked) and all(h["healthy"] for h in checked),
            "hosts": checked, "endpoints": endpoints(hosts),
            "admin_credentials": datastore_key(plan["deployment"])}


def deploy_output(plan, hosts, dry_run=False, failure=None, provisioned=False,
                  bootstrapped=()):
    """dialog.deploy's output block (workflows/deploy.yaml) for a first deploy of the plan;
    with `provisioned`, a re-run that finds everything in place; with a `failure`, the hosts
    `bootstrapped` before it."""
    changes = [] if provisioned else [
        {"action": "create", "kind": "instance", "name": h["name"], "detail": h["size"]}
        for h in plan["hosts"]]
    done = not dry_run and failure is None
    return {"deployment": plan["deployment"], "dry_run": dry_run, "plan": plan,
            "changes": changes, "hosts": [] if dry_run else hosts,
            "bootstrapped": [{"host": h["name"], "changed": not provisioned, "checks": []}
                             for h in hosts] if done else [
                                 {"host": name, "changed": True, "checks": []}
                                 for name in bootstrapped],
            "health": status_result(plan, hosts)["hosts"] if done else [],
            "endpoints": endpoints(hosts) if done else {},
            "admin_credentials": None if dry_run else datastore_key(plan["deployment"]),
            "failure": failure}


def scale_output(deployment, role, before, after, added=(), removed=(), reason=None,
                 failure=None, dry_run=False, cleaned=()):
    """dialog.scale's output block (workflows/scale.yaml)."""
    return {"deployment": deployment, "role": role, "before": before, "after": after,
            "added": list(added), "removed": list(removed), "reason": reason,
            "dry_run": dry_run, "cleaned": list(cleaned), "failure": failure}


def grown(plan, group, count):
    """The plan after `group` has grown to `count` hosts, and the names of the new ones."""
    option = {"dialog-server": "dialog_servers", "cassandra": "cassandra_nodes"}[group]
    bigger = build_plan(plan["tier"], provider=plan["provider"], region=plan["region"],
                        deployment=plan["deployment"], **{option: count})
    old = {h["name"] for h in plan["hosts"]}
    return bigger, [h["name"] for h in bigger["hosts"] if h["name"] not in old]


# --- the README's examples -------------------------------------------------------------------

def examples(pack_root=PACK_ROOT):
    """[(command, ack, answer)] for deploy, status and scale, in the order the README shows."""
    aliases = load_aliases(pack_root)
    plan = build_plan("small", provider="aws", region="us-east-1", deployment="chat2")
    hosts = sample_inventory(plan)
    _, added = grown(plan, "dialog-server", 3)
    out = []

    command = "dialog deploy small on aws as chat2"
    execution = alias_execution(aliases["deploy"], command, "65f0c0ffee0000000000d001")
    result = workflow_result(deploy_output(plan, hosts))
    out.append((command, execution, "succeeded", result, aliases["deploy"]))

    command = "dialog status chat2"
    execution = alias_execution(aliases["status"], command, "65f0c0ffee0000000000d002")
    result = python_result(status_result(plan, hosts, failing={
        "chat2-web-1": {"prometheus http": "connection refused"}}))
    out.append((command, execution, "succeeded", result, aliases["status"]))

    command = "dialog scale dialog-server to 3 for chat2"
    execution = alias_execution(aliases["scale"], command, "65f0c0ffee0000000000d003")
    result = workflow_result(scale_output(
        "chat2", "dialog-server", 1, 3, added=added,
        reason=execution["parameters"]["reason"]))
    out.append((command, execution, "succeeded", result, aliases["scale"]))

    rendered = []
    for command, execution, status, result, alias in out:
        answer, _ = result_message(alias, finished(execution, status, result))
        rendered.append((command, ack_message(alias, execution), answer))
    return rendered


def render_block(pack_root=PACK_ROOT):
    """The markdown between the README's markers (markers included)."""
    parts = [MARK_START,
             "<!-- Generated by devtools/chat_examples.py --write; do not edit by hand. -->", ""]
    for command, ack, answer in examples(pack_root):
        plain, attachment = split_message(answer)
        parts += ["`!%s`" % command, "", "> %s" % ack.strip(), ""]
        if plain.strip():
            parts += ["> %s" % plain.strip(), ""]
        if attachment.strip():
            parts += [attachment.strip("\n"), ""]
    parts.append(MARK_END)
    return "\n".join(parts)


def replace_block(readme_text, block, marks=(MARK_START, MARK_END)):
    """The README text with the marked block replaced; ValueError without both markers."""
    start, end = readme_text.find(marks[0]), readme_text.find(marks[1])
    if start < 0 or end < start:
        raise ValueError("README.md lacks the %s ... %s markers" % marks)
    return readme_text[:start] + block + readme_text[end + len(marks[1]):]


def readme_block(readme_text, marks=(MARK_START, MARK_END)):
    """The marked block as the README has it now."""
    start, end = readme_text.find(marks[0]), readme_text.find(marks[1])
    if start < 0 or end < start:
        raise ValueError("README.md lacks the %s ... %s markers" % marks)
    return readme_text[start:end + len(marks[1])]


# --- the README's troubleshooting examples ---------------------------------------------------

def raised_result(exc, stdout=""):
    """What the python runner stores when run() raised `exc`: the wrapper dies with the
    traceback on stderr, the result is the string "None" (python_runner._get_output_values)."""
    return python_result("None", stderr=_traceback_of(exc), exit_code=1, stdout=stdout)


def _traceback_of(exc):
    try:
        raise exc
    except Exception:  # pylint: disable=broad-except
        return traceback.format_exc()


def timeout_result(seconds, stdout=""):
    """What the python runner stores when it kills an action after its `timeout`."""
    return python_result("None", exit_code=-9, stdout=stdout,
                         error="Action failed to complete in %d seconds" % seconds)


class KnownDeployments(object):
    """A datastore holding the records of `names` (what list_values gives an action)."""

    def __init__(self, names):
        self.names = list(names)

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        keys = [record_key(name) for name in self.names]
        return [types.SimpleNamespace(id=k, name=k, value="{}") for k in keys
                if k.startswith(prefix or "")]


def _stage_failure(stage, hosts, failing):
    """dialog.explain_failure's line for a with-items stage whose hosts give the results in
    `failing` ({host: runner result}); the others succeeded."""
    results = [failing.get(name) or python_result({"host": name, "changed": True})
               for name in hosts]
    return failures.explain(stage, results=results, items=list(hosts))["failure"]


def troubleshooting_cases():
    """[(title, cli, alias name, chat command, status, result)] for the README: what an
    operator sees for each kind of failure, built from the pack's code in the shapes
    StackStorm stores. `cli` is (command, the line it prints)."""
    plan = build_plan("small", provider="aws", region="us-east-1", deployment="chat2")
    hosts = sample_inventory(plan)
    needs = dependencies(hosts, proxies_route_push=False)  # small: push is not proxied
    order = start_order(needs)
    server = [name for name in order if "dialog-server" in name][0]
    proxy = [name for name in order if "proxy" in name][0]
    deploy_command = "dialog deploy small on aws as chat2"
    cases = []

    def deploy_case(title, failing, status="failed"):
        """dialog.deploy's one bootstrap task: the hosts that need a failed one (directly or
        not) stop without starting, naming the host they needed; the others finish."""
        failing, stopped = dict(failing), set(failing)
        for name in order:  # needs come first
            waited = [d for d in needs[name] if d in stopped]
            if waited and name not in failing:
                failing[name] = python_result({"error": "%s: not started: %s, which it "
                                               "needs, failed" % (name, waited[0])})
                stopped.add(name)
        failure = _stage_failure("bootstrap", order, failing)
        done = [name for name in order if name not in stopped]
        output = deploy_output(plan, hosts, failure=failure, bootstrapped=done)
        cases.append((title, ("st2 execution get <id> --raw -k output.failure", failure),
                      "deploy", deploy_command, status, workflow_result(output, errors=[])))

    error = ("%s (dialog-server): check 'dialog-server http' failed after 600s: connection "
             "refused" % server)
    deploy_case("A step returned an error: a host failed its health checks",
                {server: python_result({"error": error})})
    deploy_case("A step crashed: the SSH server dropped the connection",
                {server: raised_result(paramiko.SSHException(
                    "Error reading SSH protocol banner"))})
    deploy_case("A step timed out", {proxy: timeout_result(
        3600, stdout="%s: uploaded 5 files\n%s: pulling images\n" % (proxy, proxy))})

    _, added = grown(plan, "dialog-server", 3)
    failure = _stage_failure("join", added, {added[1]: raised_result(TimeoutError(
        "timed out"))})
    cases.append(("A scale step crashed", ("st2 execution get <id> --raw -k output.failure",
                                           failure),
                  "scale", "dialog scale dialog-server to 3 for chat2", "failed",
                  workflow_result(scale_output("chat2", "dialog-server", 1, 3, added=added,
                                               reason="asked in chat by %s" % CHAT_USER,
                                               failure=failure), errors=[])))

    def refused(build):
        try:
            build()
        except InputError as exc:
            return exc.to_result()
        raise AssertionError("not refused")

    tier = refused(lambda: build_plan("huge", provider="aws"))
    cases.append(("A misspelled tier", ("st2 run dialog.plan tier=huge provider=aws -k "
                                        "result.error", tier["error"]),
                  "plan", "dialog plan huge on aws", "failed", python_result(tier)))
    provider = refused(lambda: build_plan("small", provider="azure"))
    cases.append(("A misspelled provider", ("st2 execution get <id> --raw -k output.failure",
                                            provider["error"]),
                  "deploy", "dialog deploy small on azure as chat2", "failed",
                  workflow_result(dict(deploy_output(plan, [], failure=provider["error"]),
                                       plan=None, changes=[], admin_credentials=None),
                                  errors=[])))
    role = refused(lambda: check_role("small", "dialog-servers"))
    cases.append(("A misspelled role", ("st2 execution get <id> --raw -k output.failure",
                                        role["error"]),
                  "scale", "dialog scale dialog-servers to 3 for chat2", "failed",
                  workflow_result(scale_output("chat2", "dialog-servers", None, None,
                                               reason="asked in chat by %s" % CHAT_USER,
                                               failure=role["error"]), errors=[])))
    unknown = unknown_deployment(KnownDeployments(["chat2", "lab"]),
                                 "nosuchdeployment").to_result()
    cases.append(("A deployment name nobody deployed", (
        "st2 run dialog.status deployment=nosuchdeployment -k result.error", unknown["error"]),
        "status", "dialog status nosuchdeployment", "failed", python_result(unknown)))
    return cases


def troubleshooting_answers(pack_root=PACK_ROOT):
    """[(title, cli, chat command, answer)]: each case's answer rendered by its alias."""
    aliases = load_aliases(pack_root)
    rendered = []
    for number, (title, cli, alias, command, status, result) in enumerate(
            troubleshooting_cases(), 1):
        execution = alias_execution(aliases[alias], command,
                                    "65f0c0ffee00000000000e%02d" % number)
        answer, _ = result_message(aliases[alias], finished(execution, status, result))
        rendered.append((title, cli, command, answer))
    return rendered


def render_troubleshooting(pack_root=PACK_ROOT):
    """The markdown between the README's troubleshooting markers (markers included)."""
    parts = [TROUBLE_START,
             "<!-- Generated by devtools/chat_examples.py --write; do not edit by hand. -->", ""]
    for title, (cli, line), command, answer in troubleshooting_answers(pack_root):
        plain, attachment = split_message(answer)
        parts += ["**%s.** In the CLI:" % title, "", "```", "$ " + cli, line, "```", "",
                  "In chat, `!%s`:" % command, ""]
        if plain.strip():
            parts += ["> %s" % plain.strip(), ""]
        if attachment.strip():
            parts += [attachment.strip("\n"), ""]
    parts.append(TROUBLE_END)
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="replace the block between the markers in README.md")
    args = parser.parse_args(argv)
    block = render_block()
    if not args.write:
        print(block)
        print(render_troubleshooting())
        return 0
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    updated = replace_block(text, block)
    updated = replace_block(updated, render_troubleshooting(), (TROUBLE_START, TROUBLE_END))
    if updated != text:
        with open(README, "w", encoding="utf-8") as handle:
            handle.write(updated)
        print("README.md: chat examples updated")
    else:
        print("README.md: chat examples already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
