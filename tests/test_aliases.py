"""The ChatOps aliases (aliases/*.yaml): which chat commands reach which action with which
parameters, and what the bot answers.

Matching runs with StackStorm's own alias test case (st2tests.base.BaseActionAliasTestCase) and
its format parser: the real ones under st2-run-pack-tests, the stand-in's copies otherwise. The
answers are rendered as st2 renders them (devtools/chat_examples.py) against results of the
pack's real actions and of the deploy workflow run by orquesta with canned actions.
"""

import contextlib
import copy
import io
import json
import os
import re
from unittest import mock

import jsonschema
import pytest
import yaml
from st2common.models.api.action import ActionAliasAPI
from st2common.models.utils.action_alias_utils import (
    extract_parameters_for_action_alias_db, inject_immutable_parameters)
from st2tests.base import BaseActionAliasTestCase, BaseActionTestCase

import chat_examples as ce
import lib.bootstrap
import lib.health
import local_runner
from destroy import DestroyAction
from inventory import InventoryAction
from lib.deployment_secrets import datastore_key
from lib.errors import InputError, ProviderError
from lib.planner import build_plan, validate_deployment_name
from plan import PlanAction
from status import StatusAction
from test_workflow_deploy import CannedDialogActions, deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIASES = ce.load_aliases(ROOT)
PARAM = re.compile(r"{{\s*(\S+?)\s*(?:=\s*(.*?)\s*)?}}")

# Every command the README documents and the variations an operator would type (the text after
# the bot's "!"), with the alias it must reach and what st2 extracts from it.
CASES = [
    ("deploy", "dialog deploy small on aws",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "dialog"}),
    ("deploy", "dialog deploy production on digitalocean in fra1",
     {"tier": "production", "provider": "digitalocean", "region": "fra1",
      "deployment": "dialog"}),
    ("deploy", "dialog deploy small on aws as chat2",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "chat2"}),
    ("deploy", "dialog deploy small-failover on aws in eu-west-1 as chat2",
     {"tier": "small-failover", "provider": "aws", "region": "eu-west-1",
      "deployment": "chat2"}),
    ("deploy", "dialog deploy mini to digitalocean",
     {"tier": "mini", "provider": "digitalocean", "region": None, "deployment": "dialog"}),
    ("deploy", 'dialog deploy small on aws as "chat2"',
     {"tier": "small", "provider": "aws", "region": None, "deployment": "chat2"}),
    ("deploy", "  dialog deploy small on aws  ",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "dialog"}),
    ("deploy", "dialog deploy small on aws dry_run=true",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "dialog",
      "dry_run": "true"}),
    ("deploy", "dialog deploy small on aws as chat2 cassandra_nodes=3 with_storage=true",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "chat2",
      "cassandra_nodes": "3", "with_storage": "true"}),
    ("plan", "dialog plan small on aws",
     {"tier": "small", "provider": "aws", "region": None, "deployment": "dialog"}),
    ("plan", "dialog plan production on digitalocean in fra1",
     {"tier": "production", "provider": "digitalocean", "region": "fra1",
      "deployment": "dialog"}),
    ("plan", "dialog plan small-failover on aws as chat2 with_storage=true",
     {"tier": "small-failover", "provider": "aws", "region": None, "deployment": "chat2",
      "with_storage": "true"}),
    ("status", "dialog status", {"deployment": "dialog"}),
    ("status", "dialog status chat2", {"deployment": "chat2"}),
    ("status", "dialog status of chat2", {"deployment": "chat2"}),
    ("status", "dialog status for chat2", {"deployment": "chat2"}),
    ("status", "dialog health chat2", {"deployment": "chat2"}),
    ("scale", "dialog scale dialog-server to 5",
     {"role": "dialog-server", "count": "5", "deployment": "dialog"}),
    ("scale", "dialog scale cassandra to 4 for chat2",
     {"role": "cassandra", "count": "4", "deployment": "chat2"}),
    ("scale", "dialog scale dialog-server to 5 dry_run=true",
     {"role": "dialog-server", "count": "5", "deployment": "dialog", "dry_run": "true"}),
    ("scale", "dialog scale dialog-server by 2",
     {"role": "dialog-server", "delta": "2", "deployment": "dialog"}),
    ("scale", "dialog scale cassandra by -1 in chat2",
     {"role": "cassandra", "delta": "-1", "deployment": "chat2"}),
    ("hosts", "dialog hosts", {"deployment": "dialog"}),
    ("hosts", "dialog hosts chat2", {"deployment": "chat2"}),
    ("hosts", "dialog inventory of chat2", {"deployment": "chat2"}),
    ("destroy", "dialog destroy chat2 confirm chat2", {"deployment": "chat2", "confirm": "chat2"}),
    ("destroy", "dialog destroy chat2 confirm chat", {"deployment": "chat2", "confirm": "chat"}),
]
# Half-typed commands no alias must take: each would otherwise run with a guessed parameter.
UNMATCHED = ["dialog", "dialog deploy", "dialog deploy small", "dialog plan small",
             "dialog scale dialog-server", "dialog scale to 5", "dialog destroy chat2",
             "dialog destroy", "deploy small on aws", "dialog undeploy chat2"]


def all_representations():
    return [r for alias in ALIASES.values() for r in ce.representations(alias)]


def matching_aliases(command):
    """StackStorm's match of a command against every alias (what get_matching_alias counts:
    more than one match is refused as ambiguous)."""
    from st2common.util.actionalias_matching import match_command_to_alias
    aliases = [_AliasObject(a) for a in ALIASES.values()]
    return [m["alias"].name for m in match_command_to_alias(command, aliases)]


class _AliasObject(object):
    def __init__(self, alias):
        self.__dict__.update(alias)


# --- matching, with StackStorm's alias test case ---------------------------------------------

class AliasCasesMixin(object):
    """Every case of this alias matches exactly one format of all the pack's aliases, that
    format is this alias's, and st2 extracts the expected parameters."""

    def test_documented_commands(self):
        cases = [c for c in CASES if c[0] == self.action_alias_name]
        self.assertTrue(cases)
        formats = self.action_alias_db.get_format_strings()
        for _, command, expected in cases:
            with self.subTest(command=command):
                self.assertCommandMatchesExactlyOneFormatString(all_representations(), command)
                matched = [f for f in formats if ce.extract(f, command) is not None]
                self.assertEqual(len(matched), 1, matched)
                self.assertExtractedParametersMatch(matched[0], command, expected)

    def execution_parameters(self, command, api_user=ce.CHAT_USER):
        """What st2api's alias execution controller hands to the action for a chat command:
        the registered alias's extraction, then its immutable_parameters injected with the
        controller's context (StackStorm's functions, or the stand-in's copies)."""
        format_str = next(f for f in self.action_alias_db.get_format_strings()
                          if ce.extract(f, command) is not None)
        params = extract_parameters_for_action_alias_db(
            action_alias_db=self.action_alias_db, format_str=format_str, param_stream=command)
        context = {"action_alias_ref": {"id": ce.ALIAS_ID, "name": self.action_alias_db.name},
                   "api_user": api_user, "user": ce.ST2_USER, "source_channel": ce.CHAT_CHANNEL}
        return inject_immutable_parameters(
            action_alias_db=self.action_alias_db, multiple_execution_parameters=[params],
            action_context=context)[0]


class DeployAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "deploy"


class PlanAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "plan"


class StatusAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "status"


class ScaleAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "scale"

    def test_the_execution_says_who_asked_in_chat(self):
        self.assertEqual(self.execution_parameters("dialog scale dialog-server to 5"), {
            "role": "dialog-server", "count": "5", "deployment": "dialog",
            "reason": "asked in chat by %s" % ce.CHAT_USER})
        # Without a chat user (a call of the API itself), st2's user is named.
        self.assertEqual(
            self.execution_parameters("dialog scale cassandra by -1 in chat2",
                                      api_user=None)["reason"],
            "asked in chat by %s" % ce.ST2_USER)

    def test_a_typed_reason_is_refused(self):
        with self.assertRaisesRegex(ValueError, "Immutable arguments cannot be overriden: reason"):
            self.execution_parameters('dialog scale dialog-server to 5 reason="because"')


class HostsAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "hosts"


class DestroyAliasTestCase(AliasCasesMixin, BaseActionAliasTestCase):
    action_alias_name = "destroy"

    def test_a_destroy_without_the_name_typed_again_matches_nothing(self):
        with self.assertRaises(AssertionError):
            self.assertCommandMatchesExactlyOneFormatString(
                self.action_alias_db.get_format_strings(), "dialog destroy chat2")

    def test_the_execution_is_never_a_dry_run(self):
        params = self.execution_parameters("dialog destroy chat2 confirm chat2")
        self.assertEqual(params, {"deployment": "chat2", "confirm": "chat2", "dry_run": False})
        self.assertIs(params["dry_run"], False)
        with self.assertRaisesRegex(ValueError,
                                    "Immutable arguments cannot be overriden: dry_run"):
            self.execution_parameters("dialog destroy chat2 confirm chat2 dry_run=true")


# --- what st2 refuses to register -------------------------------------------------------------

PROBE_ALIAS = {
    "name": "probe", "pack": "dialog", "action_ref": "dialog.status",
    "description": "Probe alias.",
    "formats": [{"display": "dialog probe {{ deployment }}",
                 "representation": ["dialog probe {{ deployment }}"]}],
    # Keys the schema does not list inside ack / result are accepted, as st2 accepts them.
    "ack": {"enabled": True, "format": "probing", "append_url": False, "note": "kept"},
    "result": {"format": "{{ execution.status }}", "extra": {"slack": {"color": "good"}}},
    "immutable_parameters": {"dry_run": True},
}


def load_probe_alias(pack_dir, alias):
    """The alias as st2tests' BaseActionAliasTestCase loads it from a pack (the real class
    under st2-run-pack-tests, the stand-in otherwise): through st2's registrar and its
    ActionAliasAPI validation."""
    (pack_dir / "aliases").mkdir()
    (pack_dir / "pack.yaml").write_text(yaml.safe_dump(
        {"ref": "dialog", "name": "dialog", "description": "probe", "version": "0.1.0",
         "author": "probe"}))
    (pack_dir / "aliases" / "probe.yaml").write_text(yaml.safe_dump(alias))

    class _Probe(BaseActionAliasTestCase):
        action_alias_name = "probe"

        def _get_base_pack_path(self):
            return str(pack_dir)

        def runTest(self):
            pass

    case = _Probe()
    case.setUp()
    return case.action_alias_db


def test_a_valid_alias_loads(tmp_path):
    alias_db = load_probe_alias(tmp_path, PROBE_ALIAS)
    assert (alias_db.ref, alias_db.action_ref) == ("dialog.probe", "dialog.status")
    assert alias_db.get_format_strings() == ["dialog probe {{ deployment }}"]
    assert alias_db.immutable_parameters == {"dry_run": True}


DROP = object()
# Each one a mistake st2's AliasesRegistrar refuses with this message.
REFUSED_ALIASES = [
    ("unknown field", {"parameters": {"dry_run": True}},
     r"Additional properties are not allowed \('parameters' was unexpected\)"),
    ("formats not a list", {"formats": "dialog probe {{ deployment }}"},
     r"is not of type 'array', 'null'"),
    ("representation not a list",
     {"formats": [{"display": "dialog probe", "representation": "dialog probe"}]},
     # jsonschema 3.2 (st2 3.9) and 4 pick different errors of the anyOf.
     r"'dialog probe' is not of type 'array'|is not valid under any of the given schemas"),
    ("ack.enabled not a boolean", {"ack": {"enabled": "no", "format": "probing"}},
     r"'no' is not of type 'boolean'"),
    ("result.extra not a mapping", {"result": {"format": "done", "extra": "slack"}},
     r"'slack' is not of type 'object'"),
    ("immutable_parameters not a mapping", {"immutable_parameters": ["dry_run"]},
     r"\['dry_run'\] is not of type 'object'"),
    ("enabled not a boolean", {"enabled": "yes"}, r"'yes' is not of type 'boolean'"),
    ("action_ref missing", {"action_ref": DROP}, r"'action_ref' is a required property"),
]


@pytest.mark.parametrize("change,message", [c[1:] for c in REFUSED_ALIASES],
                         ids=[c[0] for c in REFUSED_ALIASES])
def test_an_alias_st2_would_not_register_is_refused(tmp_path, change, message):
    alias = {key: value for key, value in dict(PROBE_ALIAS, **change).items()
             if value is not DROP}
    with pytest.raises(jsonschema.ValidationError, match=message):
        load_probe_alias(tmp_path, alias)


def test_every_alias_has_cases():
    assert {c[0] for c in CASES} == set(ALIASES)


@pytest.mark.parametrize("command", UNMATCHED)
def test_half_typed_commands_match_no_alias(command):
    assert matching_aliases(command) == []


@pytest.mark.parametrize("alias,command,_", CASES, ids=[c[1].strip() for c in CASES])
def test_no_two_aliases_claim_a_command(alias, command, _):
    assert matching_aliases(command) == [alias]


# Cases from StackStorm's own tests of the parser (st2common/tests/unit/test_action_alias_utils.py,
# Apache License 2.0): the stand-in copy must give StackStorm's answers. None: no match.
ST2_PARSER_CASES = [
    ("", "a=foobar1", {"a": "foobar1"}),
    ("foo", "foo a='foobar2 poonies bar'", {"a": "foobar2 poonies bar"}),
    ("{{ captain }} is my captain", 'Malcolm Reynolds is my captain weirdo="River Tam"',
     {"captain": "Malcolm Reynolds", "weirdo": "River Tam"}),
    ("skip {{a}} more skip {{b}} and skip more.", 'skip "a1 a2" more skip b1 and skip more.',
     {"a": "a1 a2", "b": "b1"}),
    ("acl {{a}} {{b}} {{c}} {{d=1}}", 'acl "a1 a2" "b1" "c1"',
     {"a": "a1 a2", "b": "b1", "c": "c1", "d": "1"}),
    ("skip {{ a = value }} more", "skip more", {"a": "value"}),
    ("skip {{a}} more skip {{b}}.", 'skip {"a": "b", "c": "d"} more skip x.',
     {"a": '{"a": "b", "c": "d"}', "b": "x"}),
    ("testing {{ b=abc }} {{ c=xyz }}", 'testing newvalue d={"1": "2"} e="long value"',
     {"b": "newvalue", "c": "xyz", "d": '{"1": "2"}', "e": "long value"}),
    ("foo bar ponies", "foo lulz ponies", None),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "foo ASDF-1234", {"issue_key": "ASDF-1234"}),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "bar foo ASDF-1234", None),
    (r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "foo ASDF-1234 bar", None),
]


@pytest.mark.parametrize("alias_format,command,expected", ST2_PARSER_CASES)
def test_the_parser_gives_stackstorms_answers(alias_format, command, expected):
    assert ce.extract(alias_format, command) == expected


# hubot-stackstorm (src/lib/command_factory.js, getRegexForFormatString; Apache License 2.0)
# listens with its own regex per representation, case-insensitive, after the bot's "!"; every
# alias whose regex matches runs, so hubot too must see exactly one alias per command.
HUBOT_EXTRA_PARAMS = (r'(\s+(\S+)\s*=("([\s\S]*?)"|\'([\s\S]*?)\'|({[\s\S]*?})|(\S+))\s*)*')


def hubot_regex(representation, hubot_alias="!"):
    regex = re.sub(r"(\s*){{\s*\S+\s*=\s*(?:({.+?}|.+?))\s*}}(\s*)",
                   lambda m: r"\s*(" + m.group(1) + r"([\s\S]+?)" + m.group(3) + r")?\s*",
                   representation)
    regex = re.sub(r"\s*{{.+?}}\s*", lambda m: r"\s*([\s\S]+?)\s*", regex)
    return re.compile("^\\" + hubot_alias + r"\s*" + regex + HUBOT_EXTRA_PARAMS + r"\s*$",
                      re.IGNORECASE)


@pytest.mark.parametrize("alias,command,_", CASES, ids=[c[1].strip() for c in CASES])
def test_hubot_hands_each_command_to_one_alias(alias, command, _):
    listening = {name for name, a in ALIASES.items() for r in ce.representations(a)
                 if hubot_regex(r).search("!" + command.strip())}
    assert listening == {alias}


def test_misordered_options_are_refused_rather_than_guessed():
    # "as" before "in": the name swallows the region, and the plan refuses such a name
    # instead of deploying somewhere else.
    params = ce.extract(ce.representations(ALIASES["deploy"])[0],
                        "dialog deploy small on aws as chat2 in us-west-2")
    assert (params["deployment"], params["region"]) == ("chat2 in us-west-2", None)
    with pytest.raises(InputError):
        validate_deployment_name(params["deployment"])


# --- what the action receives ----------------------------------------------------------------

def received(alias_name, command):
    """The parameters the action runs with: st2api's extraction, immutable parameters and
    casts (chat_examples.alias_execution), then st2's validation and defaults."""
    alias = ALIASES[alias_name]
    execution = ce.alias_execution(alias, command)
    meta = local_runner.load_action_metadata(alias["action_ref"], ROOT)
    params, _ = local_runner.prepare_parameters(meta, execution["parameters"])
    return params


@pytest.mark.parametrize("alias,command,_", CASES, ids=[c[1].strip() for c in CASES])
def test_st2_accepts_what_every_command_extracts(alias, command, _):
    assert received(alias, command)


def test_deploy_from_chat_uses_the_profile_region_and_the_default_name():
    params = received("deploy", "dialog deploy small on aws")
    assert (params["tier"], params["provider"], params["region"]) == ("small", "aws", None)
    assert (params["deployment"], params["dry_run"]) == ("dialog", False)
    params = received("deploy", "dialog deploy small on aws as chat2 dry_run=true "
                                "cassandra_nodes=3")
    assert (params["deployment"], params["dry_run"], params["cassandra_nodes"]) == (
        "chat2", True, 3)


def test_scale_from_chat_gets_an_integer_and_says_who_asked():
    params = received("scale", "dialog scale dialog-server to 5")
    assert (params["role"], params["count"], params["delta"]) == ("dialog-server", 5, None)
    assert params["reason"] == "asked in chat by %s" % ce.CHAT_USER
    assert received("scale", "dialog scale cassandra by -1 in chat2")["delta"] == -1
    with pytest.raises(ValueError, match="Immutable arguments cannot be overriden: reason"):
        ce.alias_execution(ALIASES["scale"], 'dialog scale cassandra to 4 reason="because"')


def test_destroy_from_chat_is_never_a_dry_run():
    params = received("destroy", "dialog destroy chat2 confirm chat2")
    assert (params["deployment"], params["confirm"], params["dry_run"]) == (
        "chat2", "chat2", False)
    with pytest.raises(ValueError, match="Immutable arguments cannot be overriden: dry_run"):
        ce.alias_execution(ALIASES["destroy"], "dialog destroy chat2 confirm chat2 dry_run=true")


def test_a_misspelled_provider_or_role_reaches_the_action_that_answers_in_one_line():
    # st2api would answer an enum miss with a jsonschema dump, so these parameters carry no
    # enum: the request passes and the workflow's first task refuses the value in one line
    # (tests/test_chat_examples.py MistypedInputTestCase, tests/test_workflow_scale.py).
    assert received("deploy", "dialog deploy small on azure")["provider"] == "azure"
    assert received("scale", "dialog scale dialog-servers to 5")["role"] == "dialog-servers"
    with pytest.raises(ValueError, match="count"):
        received("scale", "dialog scale dialog-server to five")


# --- structure: what st2 registers -----------------------------------------------------------

def alias_files():
    # Hidden files (.gitkeep) are not content; anything else must be an alias st2 loads.
    return sorted(os.path.join(ROOT, "aliases", f) for f in os.listdir(os.path.join(
        ROOT, "aliases")) if not f.startswith("."))


@pytest.mark.parametrize("path", alias_files(), ids=os.path.basename)
def test_alias_files_are_what_st2_registers(path):
    with open(path, encoding="utf-8") as handle:
        alias = yaml.safe_load(handle)
    assert path.endswith(".yaml") and os.path.basename(path) == alias["name"] + ".yaml"
    ActionAliasAPI(**alias).validate()  # what st2's AliasesRegistrar checks
    assert alias["pack"] == "dialog" and alias["description"]
    assert alias.get("enabled", True) is True
    for item in alias["formats"]:
        assert set(item) == {"display", "representation"}, item
        assert item["display"] and item["representation"]
    assert alias["ack"]["format"].strip() and alias["result"]["format"].strip()
    assert "extra" in alias["result"]


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_formats_name_real_parameters_of_a_real_action(name):
    alias = ALIASES[name]
    meta = local_runner.load_action_metadata(alias["action_ref"], ROOT)
    params = meta["parameters"]
    immutable = alias.get("immutable_parameters") or {}
    assert set(immutable) <= set(params), set(immutable) - set(params)
    required = {p for p, s in params.items() if s.get("required") and "default" not in s}
    for item in alias["formats"]:
        shown = {n for n, _ in PARAM.findall(item["display"])}
        assert shown <= set(params), shown - set(params)
        for representation in item["representation"]:
            named = PARAM.findall(representation)
            assert {n for n, _ in named} <= set(params), named
            assert {n for n, _ in named} <= shown, "help must show every parameter"
            assert required <= {n for n, _ in named} | set(immutable), required
            assert not {n for n, _ in named} & set(immutable)
            for param, default in named:
                if default:
                    # A format default must say what the action would do without it.
                    assert default == str(params[param]["default"]), (param, default)


def test_aliases_cover_every_operator_action_once():
    refs = sorted(a["action_ref"] for a in ALIASES.values())
    assert refs == sorted(["dialog.deploy", "dialog.plan", "dialog.status", "dialog.scale",
                           "dialog.inventory", "dialog.destroy"])


@pytest.mark.parametrize("alias,command,_", CASES, ids=[c[1].strip() for c in CASES])
def test_ack_renders_with_the_scheduled_execution(alias, command, _):
    execution = ce.alias_execution(ALIASES[alias], command)
    ack = ce.ack_message(ALIASES[alias], execution)  # undefined names are errors here
    assert ack.strip() and "{" not in ack and "\n" not in ack.strip()
    for key in ("deployment", "tier", "role"):
        if execution["parameters"].get(key):
            assert execution["parameters"][key] in ack


def test_destroy_ack_says_a_mismatched_name_deletes_nothing():
    execution = ce.alias_execution(ALIASES["destroy"], "dialog destroy chat2 confirm chat")
    assert "nothing will be deleted" in ce.ack_message(ALIASES["destroy"], execution)


def test_sample_outputs_have_the_workflows_output_keys():
    for workflow, sample in (("deploy", ce.deploy_output(build_plan("small"), [])),
                             ("scale", ce.scale_output("dialog", "cassandra", 3, 4))):
        with open(os.path.join(ROOT, "workflows", workflow + ".yaml"), encoding="utf-8") as fp:
            output = yaml.safe_load(fp)["output"]
        assert set(sample) == {k for item in output for k in item}, workflow


# --- answers ---------------------------------------------------------------------------------

def answer(alias_name, command, status, result):
    """(message, extra) the bot posts for the finished execution. The message is rendered
    as st2 does (undefined names empty) and once more strictly: a name the result lacks would
    be silently empty in chat, so both must agree."""
    alias = ALIASES[alias_name]
    execution = ce.finished(ce.alias_execution(alias, command), status, result)
    message, extra = ce.result_message(alias, execution)
    strict, _ = ce.result_message(alias, execution, allow_undefined=False)
    assert strict == message
    assert message.count("```") % 2 == 0 and "{{" not in message and "{%" not in message
    return message, extra


def table(message, header):
    """The rows of the table whose header line starts with `header`, as {first cell: cells};
    asserts that every cell starts exactly under its column's title."""
    lines = message.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(header))
    titles = lines[at]
    starts = [0] + [m.start() for m in re.finditer(r"(?<=  )(?=\S)", titles)]
    rows = {}
    for line in lines[at + 1:]:
        if not line.strip() or line.startswith("```"):
            break
        for start in starts[1:]:
            assert line[start - 2:start] == "  " and line[start] != " ", (titles, line)
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = cells
    return rows


def plain_and_attachment(message):
    plain, attachment = ce.split_message(message)
    assert "\n" not in plain.strip()
    return plain.strip(), attachment


def test_every_answer_branches_on_the_execution_status():
    for alias in ALIASES.values():
        assert "execution.status == 'succeeded'" in alias["result"]["format"]
        assert "execution.status" in json.dumps(alias["result"]["extra"])


class PythonActionAnswersTestCase(BaseActionTestCase):
    """Answers to the python actions' results: the real actions, offline."""

    action_cls = PlanAction

    def run_action(self, cls, config=None, **parameters):
        self.action_cls = cls
        self.setUp()
        action = self.get_action_instance(config=config or {})
        with contextlib.redirect_stdout(io.StringIO()):
            ok, result = action.run(**parameters)
        return ("succeeded" if ok else "failed"), ce.python_result(result)

    # --- plan

    def test_plan_answer_lists_hosts_and_public_ports(self):
        for tier, provider in (("small", "aws"), ("production", "digitalocean"),
                               ("mini", "static")):
            with self.subTest(tier=tier, provider=provider):
                status, result = self.run_action(PlanAction, tier=tier, provider=provider)
                plan = result["result"]
                message, extra = answer("plan", "dialog plan %s on %s" % (tier, provider),
                                        status, result)
                plain, attachment = plain_and_attachment(message)
                self.assertIn(plan["title"], plain)
                self.assertIn("Nothing was changed", plain)
                rows = table(attachment, "HOST")
                self.assertEqual(list(rows), [h["name"] for h in plan["hosts"]])
                for host in plan["hosts"]:
                    self.assertEqual(rows[host["name"]][1:], [
                        ",".join(host["roles"]), host["size"] or "operator host",
                        str(host["public_ips"] or "-")])
                public = [r for r in plan["firewall"] if r["source"] == "public"]
                self.assertTrue(public)
                for rule in public:
                    ports = str(rule["from_port"]) if rule["from_port"] == rule["to_port"] \
                        else "%d-%d" % (rule["from_port"], rule["to_port"])
                    self.assertTrue(re.search(r"^\s+%s\s+%s\s.*\b%s\b" % (
                        re.escape(rule["role"]), rule["protocol"], re.escape(ports)),
                        attachment, re.M), (rule, attachment))
                internal = {str(r["from_port"]) for r in plan["firewall"]
                            if r["source"] == "internal"} - {
                    str(r["from_port"]) for r in public}
                section = attachment.split("Open to the internet:")[1].split("Totals")[0]
                for port in internal:
                    self.assertNotRegex(section, r"\b%s\b" % port)
                self.assertEqual(extra, {"slack": {"color": "good"}})

    def test_plan_answer_to_bad_input_gives_the_reason(self):
        status, result = self.run_action(PlanAction, tier="small", provider="aws",
                                         cassandra_nodes=2)
        self.assertEqual(status, "failed")
        message, extra = answer("plan", "dialog plan small on aws cassandra_nodes=2", status,
                                result)
        self.assertEqual(message, "Plan small on aws failed: %s{~}" % result["result"]["error"])
        self.assertEqual(extra, {"slack": {"color": "danger"}})

    # --- status

    def run_status(self, deployment="chat2", tier="small", failing=None, unreachable=None,
                   secrets=True, **counts):
        """dialog.status on sample hosts, SSH replaced at the narrowest point: the connection
        (or its refusal) and the probe's results."""
        plan = build_plan(tier, provider="aws", region="us-east-1", deployment=deployment,
                          **counts)
        hosts = ce.sample_inventory(plan)
        failing, unreachable = failing or {}, unreachable or {}
        # Issue 12: clouds default to ssh_address jump, so the proxy is reached at its public
        # address and every other host at its private one through that proxy.
        by_address = {a: h for h in hosts for a in [h["private_address"]] +
                      (h.get("public_addresses") or [])}

        def connect(address, **login):
            host = by_address[address]
            jump = login.get("jump")
            if jump and jump["name"] in unreachable:
                raise ProviderError(ce.ssh_failure(by_address[jump["address"]],
                                                   unreachable[jump["name"]], jump["user"]))
            if host["name"] in unreachable:
                raise ProviderError(ce.ssh_failure(host, unreachable[host["name"]],
                                                   login["user"]))
            return mock.Mock(user=login["user"])

        def run_probe(connection, rendered, request, **_):
            return {"health": {"results": ce.probe_results(
                dict(rendered, checks=request["checks"]), failing.get(rendered["host"]))}}

        self.action_cls = StatusAction
        self.setUp()
        if secrets:
            self.action_service.set_value(datastore_key(deployment), json.dumps(
                ce.SAMPLE_SECRETS), local=False, encrypt=True)
        config = {"profiles": {"default": {"provider": "aws", "region": "us-east-1",
                                           "images": ce.SAMPLE_IMAGES}}}
        action = self.get_action_instance(config=config)
        # The given host list is checked against the provider's inventory: the cloud's
        # answer (the same hosts) stands in at the driver.
        provider = mock.Mock(inventory=lambda name: copy.deepcopy(hosts))
        with mock.patch.object(lib.bootstrap, "connect", connect), \
                mock.patch.object(lib.health, "run_probe", run_probe), \
                mock.patch.object(StatusAction, "driver", lambda *_: provider), \
                contextlib.redirect_stdout(io.StringIO()):
            ok, result = action.run(deployment=deployment, hosts=hosts, tier=tier)
        return plan, hosts, ("succeeded" if ok else "failed"), ce.python_result(result)

    def test_the_sample_status_is_what_dialog_status_returns(self):
        failing = {"chat2-web-1": {"prometheus http": "connection refused"}}
        unreachable = {"chat2-proxy-2": "timed out"}
        plan, hosts, status, result = self.run_status(failing=failing, unreachable=unreachable)
        self.assertEqual(status, "succeeded")
        self.assertEqual(result["result"], ce.status_result(plan, hosts, failing, unreachable))

    def test_status_answer_shows_each_host_its_roles_and_health(self):
        for tier, counts in (("small", {}), ("production", {"dialog_servers": 3})):
            with self.subTest(tier=tier):
                plan, hosts, status, result = self.run_status(tier=tier, **counts)
                message, extra = answer("status", "dialog status chat2", status, result)
                plain, attachment = plain_and_attachment(message)
                self.assertEqual(plain, '"chat2" is healthy: %d of %d hosts pass every check.'
                                 % (len(hosts), len(hosts)))
                rows = table(attachment, "HOST")
                checked = {h["name"]: h for h in result["result"]["hosts"]}
                self.assertEqual(list(rows), [h["name"] for h in hosts])
                for name, cells in rows.items():
                    self.assertEqual(cells[1:], [",".join(checked[name]["roles"]), "ok (%d checks)"
                                                 % len(checked[name]["checks"])])
                    self.assertLessEqual(len(max(attachment.split("\n"), key=len)), 100)
                endpoints = result["result"]["endpoints"]
                for key in ("web", "api", "websocket", "mobile"):
                    self.assertRegex(attachment, r"(?m)^%s +%s$" % (key, re.escape(
                        endpoints[key])))
                self.assertIn("st2 key get dialog.chat2.secrets --decrypt", attachment)
                self.assertNotIn("Failing", attachment)
                self.assertEqual(extra, {"slack": {"color": "good"}})

    def test_status_answer_names_what_fails_and_what_cannot_be_reached(self):
        plan, hosts, status, result = self.run_status(
            failing={"chat2-cassandra-1": {"cassandra ring": "10.0.0.17 is DN"}},
            unreachable={"chat2-web-1": "timed out"})
        message, extra = answer("status", "dialog status chat2", status, result)
        plain, attachment = plain_and_attachment(message)
        self.assertEqual(plain, '"chat2" is NOT healthy: 5 of 7 hosts pass every check.')
        rows = table(attachment, "HOST")
        self.assertEqual(rows["chat2-web-1"][2], "UNREACHABLE")
        self.assertEqual(rows["chat2-cassandra-1"][2], "FAILING 1/2")
        failing = attachment.split("Failing:\n")[1].split("\n\n")[0].split("\n")
        self.assertEqual(failing, [
            "  chat2-web-1: root@10.0.0.13:22: cannot connect: timed out",
            "  chat2-cassandra-1: cassandra ring (cassandra): 10.0.0.17 is DN"])
        self.assertEqual(extra, {"slack": {"color": "warning"}})

    def test_status_answer_to_a_failure_gives_the_reason(self):
        plan, hosts, status, result = self.run_status(deployment="ghost", secrets=False)
        self.assertEqual(status, "failed")
        message, extra = answer("status", "dialog status ghost", status, result)
        self.assertEqual(message, 'Status of "ghost" failed: %s{~}' % result["result"]["error"])
        self.assertIn("run dialog.deploy for it first", message)
        self.assertEqual(extra, {"slack": {"color": "danger"}})

    def test_a_crash_or_a_timeout_still_gets_a_reason(self):
        crashed = ce.python_result("None", exit_code=1, stderr=(
            "Traceback (most recent call last):\n  File \"status.py\", line 3\n"
            "KeyError: 'hosts'\n"))
        message, _ = answer("status", "dialog status", "failed", crashed)
        self.assertEqual(message, "Status of \"dialog\" failed: KeyError: 'hosts'{~}")
        timed_out = ce.python_result("None", error="Action failed to complete in 600 seconds")
        message, extra = answer("hosts", "dialog hosts", "timeout", timed_out)
        self.assertEqual(message, 'Listing the hosts of "dialog" timeout: Action failed to '
                                  'complete in 600 seconds{~}')
        self.assertEqual(extra, {"slack": {"color": "danger"}})

    # --- hosts

    def test_hosts_answer_lists_roles_state_and_addresses(self):
        plan = build_plan("small", provider="static", deployment="lab")
        given = [{"name": h["name"], "address": h["public_addresses"][0] if h[
            "public_addresses"] else "192.0.2.%d" % n, "private_address": h["private_address"],
            "roles": h["roles"]} for n, h in enumerate(ce.sample_inventory(plan), 1)]
        config = {"profiles": {"default": {"provider": "static", "hosts": given}}}
        status, result = self.run_action(InventoryAction, config=config, deployment="lab")
        message, _ = answer("hosts", "dialog hosts lab", status, result)
        plain, attachment = plain_and_attachment(message)
        self.assertEqual(plain, '"lab" has 7 hosts on static.')
        rows = table(attachment, "HOST")
        for host in given:
            self.assertEqual(rows[host["name"]][1:], [",".join(host["roles"]), "given",
                                                      host["private_address"], host["address"]])

    def test_hosts_answer_for_a_deployment_without_hosts_and_for_a_bad_name(self):
        empty = ce.python_result({"deployment": "chat9", "provider": "aws",
                                  "region": "us-east-1", "hosts": []})
        message, _ = answer("hosts", "dialog hosts chat9", "succeeded", empty)
        self.assertEqual(message, 'No hosts of "chat9" on aws us-east-1.{~}')
        status, result = self.run_action(InventoryAction, deployment="Chat_2")
        message, _ = answer("hosts", "dialog hosts Chat_2", status, result)
        self.assertEqual(message, 'Listing the hosts of "Chat_2" failed: %s{~}'
                         % result["result"]["error"])

    # --- destroy

    def test_destroy_answer_counts_what_was_deleted(self):
        plan = build_plan("small", provider="aws", deployment="chat2")
        changes = [{"action": "delete", "kind": "instance", "name": h["name"], "detail": ""}
                   for h in plan["hosts"]] + [
            {"action": "delete", "kind": "security-group", "name": "chat2-%s" % g,
             "detail": ""} for g in ("proxy", "web")]
        result = ce.python_result({
            "deployment": "chat2", "provider": "aws", "region": "us-east-1", "dry_run": False,
            "changes": changes, "summary": {"create": 0, "update": 0, "delete": len(changes)},
            "forgotten": ["dialog.chat2.deployment", "dialog.chat2.secrets"]})
        message, _ = answer("destroy", "dialog destroy chat2 confirm chat2", "succeeded", result)
        plain, attachment = plain_and_attachment(message)
        self.assertEqual(plain, 'Destroyed "chat2" on aws us-east-1: 9 resources deleted.')
        self.assertRegex(attachment, r"(?m)^instance +7$")
        self.assertRegex(attachment, r"(?m)^security-group +2$")
        self.assertIn("dialog.chat2.deployment, dialog.chat2.secrets", attachment)

    def test_destroy_answer_for_static_hosts_and_for_a_wrong_confirmation(self):
        config = {"profiles": {"default": {"provider": "static", "hosts": [
            {"name": "lab-proxy-1", "address": "192.0.2.10", "roles": ["proxy"]}]}}}
        status, result = self.run_action(DestroyAction, config=config, deployment="lab",
                                         confirm="lab")
        message, _ = answer("destroy", "dialog destroy lab confirm lab", status, result)
        self.assertEqual(message, 'Nothing of "lab" was found to delete on static (static '
                                  'hosts are never deleted).{~}')
        status, result = self.run_action(DestroyAction, config=config, deployment="lab",
                                         confirm="lba")
        message, extra = answer("destroy", "dialog destroy lab confirm lba", status, result)
        self.assertEqual(message, 'Destroy of "lab" failed: confirm: type the deployment name '
                                  '(lab) again to destroy it{~}')
        self.assertEqual(extra, {"slack": {"color": "danger"}})


# --- answers to the workflows ----------------------------------------------------------------

def deploy_answer(command, actions, **params):
    result = deploy(actions, **params)
    return result, answer("deploy", command, result.status, result.result)


def test_deploy_answer_gives_endpoints_hosts_and_where_the_admin_login_is():
    result, (message, extra) = deploy_answer("dialog deploy small on aws as chat2",
                                             CannedDialogActions(), deployment="chat2")
    assert result.status == "succeeded", result.errors
    plain, attachment = plain_and_attachment(message)
    assert plain == 'Deployed "chat2" (small on aws us-east-1): 7 hosts, all healthy.'
    rows = table(attachment, "HOST")
    assert list(rows) == [h["name"] for h in result.output["hosts"]]
    assert all(cells[2] == "ok (0 checks)" for cells in rows.values())
    assert re.search(r"(?m)^web +https://198\.51\.100\.1/$", attachment)
    assert "st2 key get dialog.chat2.secrets --decrypt" in attachment
    assert "7 provider resources created" in attachment
    assert extra == {"slack": {"color": "good"}}


def test_deploy_answer_to_a_rerun_says_nothing_changed():
    actions = CannedDialogActions()
    assert deploy(actions, tier="small").status == "succeeded"
    _, (message, _) = deploy_answer("dialog deploy small on aws", actions, tier="small")
    assert "This run changed nothing" in message


def test_deploy_answer_to_a_dry_run_lists_the_planned_hosts():
    result, (message, _) = deploy_answer("dialog deploy small-failover on aws dry_run=true",
                                         CannedDialogActions(), tier="small-failover",
                                         dry_run=True)
    plain, attachment = plain_and_attachment(message)
    assert plain == 'Dry run of "dialog" (small-failover on aws us-east-1): nothing was changed.'
    plan = result.output["plan"]
    rows = table(attachment, "HOST")
    assert {n: c[2] for n, c in rows.items()} == {h["name"]: h["size"] for h in plan["hosts"]}
    assert "Provider changes: %d to add, 0 to change, 0 to destroy." % len(plan["hosts"]) \
        in attachment


def test_deploy_answer_to_a_failed_bootstrap_names_host_and_reason():
    result, (message, extra) = deploy_answer(
        "dialog deploy small on aws", CannedDialogActions(fail_once={"dialog-dialog-server-1"}),
        tier="small")
    assert result.status == "failed"
    plain, attachment = plain_and_attachment(message)
    assert plain.startswith('Deploy of "dialog" (small on aws us-east-1) failed.')
    assert "send the same command again" in plain
    lines = attachment.strip("`\n").split("\n")
    assert lines[0] == result.output["failure"]
    assert lines[1].startswith("Bootstrapped before it stopped: ")
    # Issue 12: every host bootstraps at once and starts when what it needs is ready, so web
    # and voice-push (needing nothing) finish too; only the proxies, which need the failed
    # dialog server, stop with it.
    assert set(lines[1].split(": ", 1)[1].split(", ")) == {
        "dialog-postgres-1", "dialog-cassandra-1", "dialog-web-1", "dialog-voice-push-1"}
    assert extra == {"slack": {"color": "danger"}}


def test_deploy_answer_to_bad_input_gives_the_plan_error():
    error = "cassandra_nodes: 2 is not a count the small tier allows; allowed values: 1, 3"
    result, (message, _) = deploy_answer("dialog deploy small on aws cassandra_nodes=2",
                                         CannedDialogActions(fail_plan=error), tier="small",
                                         cassandra_nodes=2)
    assert result.status == "failed"
    assert message.split("```")[1].strip() == error
    assert "(small on aws)" in message, "no plan: what was asked for"


def test_deploy_answer_when_the_workflow_never_produced_output():
    result = ce.workflow_result(None, errors=[{"type": "error", "message": "Unable to render "
                                               "workflow input", "task_id": None}])
    message, _ = answer("deploy", "dialog deploy small on aws", "failed", result)
    assert message.split("```")[1].strip() == "Unable to render workflow input"


SCALED = ce.scale_output("chat2", "dialog-server", 1, 3,
                         added=["chat2-dialog-server-2", "chat2-dialog-server-3"],
                         reason="asked in chat by alice")


def test_scale_answer_says_what_changed():
    message, extra = answer("scale", "dialog scale dialog-server to 3 for chat2", "succeeded",
                            ce.workflow_result(SCALED))
    plain, attachment = plain_and_attachment(message)
    assert plain == 'Scaled "chat2": dialog-server 1 -> 3.'
    assert attachment.strip("`\n").split("\n") == [
        "+ chat2-dialog-server-2  joined, healthy", "+ chat2-dialog-server-3  joined, healthy",
        "Why: asked in chat by alice"]
    assert extra == {"slack": {"color": "good"}}


def test_scale_answer_to_a_scale_in_a_dry_run_and_a_no_op():
    shrunk = ce.scale_output("chat2", "cassandra", 4, 3, removed=["chat2-cassandra-4"],
                             cleaned=[])
    message, _ = answer("scale", "dialog scale cassandra to 3 for chat2", "succeeded",
                        ce.workflow_result(shrunk))
    assert "cassandra 4 -> 3" in message
    assert "- chat2-cassandra-4  decommissioned and removed" in message
    dry = dict(SCALED, dry_run=True)
    message, _ = answer("scale", "dialog scale dialog-server to 3 for chat2 dry_run=true",
                        "succeeded", ce.workflow_result(dry))
    assert message.startswith('Dry run for "chat2": dialog-server would go from 1 to 3. '
                              'Nothing was changed.')
    assert "+ chat2-dialog-server-2  (would join)" in message
    same = ce.scale_output("chat2", "dialog-server", 3, 3)
    message, _ = answer("scale", "dialog scale dialog-server to 3 for chat2", "succeeded",
                        ce.workflow_result(same))
    assert message == '"chat2" already has 3 dialog-server hosts: nothing to change.{~}'


def test_scale_answer_to_a_refusal_and_to_a_failure_mid_way():
    refusal = "count: 4 dialog-server is not a count the small tier allows; allowed values: 1, 3"
    refused = ce.scale_output("chat2", "dialog-server", None, None, failure=refusal)
    message, extra = answer("scale", "dialog scale dialog-server to 4 for chat2", "failed",
                            ce.workflow_result(refused, errors=[{"message": "Execution failed."}]))
    plain, attachment = plain_and_attachment(message)
    assert plain == 'Scaling "chat2" dialog-server to 4 failed.'
    assert attachment.strip("`\n") == refusal
    assert extra == {"slack": {"color": "danger"}}
    broken = dict(SCALED, failure="chat2-dialog-server-3 (dialog-server): check 'dialog-server "
                                  "http' failed after 600s: connection refused")
    message, _ = answer("scale", "dialog scale dialog-server to 3 for chat2", "failed",
                        ce.workflow_result(broken, errors=[]))
    assert broken["failure"] in message
    assert "It was adding chat2-dialog-server-2, chat2-dialog-server-3 when it stopped" in message
