"""The README's ChatOps section: every command it documents reaches the alias and action it
names, and its example answers are what the aliases render (devtools/chat_examples.py). Its
troubleshooting examples are what the workflows and actions give for each kind of failure, and
an operator's mistyped input is answered in one line, the same in chat and in the CLI."""

import contextlib
import io
import json
import os
import re

import paramiko
import pytest
from st2tests.base import BaseActionTestCase

import chat_examples as ce
import local_runner
from lib.deployment_record import record_key
from plan import PlanAction
from status import StatusAction
from test_aliases import matching_aliases
from test_workflow_deploy import CannedDialogActions, RealPlan, deploy, raised, timed_out
from test_workflow_scale import CannedScaleActions, scale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIASES = ce.load_aliases(ROOT)


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def chatops_section():
    text = readme()
    start = text.index("\n## ChatOps\n")
    return text[start:text.index("\n## ", start + 1)]


def commands_table():
    """[(command, example, action, what)] of the section's table."""
    rows = []
    for line in chatops_section().split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows.append(tuple(c.strip("`") for c in cells[:3]) + (cells[3],))
    return rows


def help_line(display):
    """An alias display as the table writes it: {{ tier }} -> <tier>."""
    return re.sub(r"{{\s*(\S+?)\s*}}", r"<\1>", display)


def test_readme_examples_are_what_the_aliases_render():
    expected = ce.render_block(ROOT)
    assert ce.readme_block(readme()) == expected, (
        "README's chat examples are stale: run python3 devtools/chat_examples.py --write")


def test_the_table_lists_every_alias_format_once():
    shown = sorted(r[0] for r in commands_table())
    displays = sorted(help_line(f["display"]) for a in ALIASES.values() for f in a["formats"])
    assert shown == displays


@pytest.mark.parametrize("row", commands_table(), ids=lambda r: r[1])
def test_each_row_runs_the_action_it_names(row):
    command, example, action, what = row
    assert example.startswith("!") and what
    names = matching_aliases(example[1:])
    assert len(names) == 1, names
    alias = ALIASES[names[0]]
    assert alias["action_ref"] == action
    formats = [f for f in alias["formats"] if help_line(f["display"]) == command]
    assert len(formats) == 1
    assert any(ce.extract(r, example[1:]) is not None for r in formats[0]["representation"]), \
        "the example is an instance of its row's command"
    assert ce.alias_execution(alias, example[1:])["parameters"]


def test_every_command_the_section_quotes_matches_one_alias():
    quoted = re.findall(r"`!(dialog [^`]+)`", chatops_section())
    assert len(quoted) >= len(commands_table()) + 5
    for command in quoted:
        assert len(matching_aliases(command)) == 1, command


# --- troubleshooting ---------------------------------------------------------------------------

def test_readme_troubleshooting_is_what_the_code_renders():
    marks = (ce.TROUBLE_START, ce.TROUBLE_END)
    assert ce.readme_block(readme(), marks) == ce.render_troubleshooting(ROOT), (
        "README's troubleshooting examples are stale: run python3 devtools/chat_examples.py "
        "--write")


def troubleshooting(title):
    """(cli line, chat command, status, result, answer) of the README's case `title`."""
    cases = {c[0]: c for c in ce.troubleshooting_cases()}
    answers = {a[0]: a for a in ce.troubleshooting_answers(ROOT)}
    _, (_, line), alias, command, status, result = cases[title]
    return line, alias, command, status, result, answers[title][3]


def answer_to(alias, command, status, result):
    execution = ce.finished(ce.alias_execution(ALIASES[alias], command), status, result)
    return ce.result_message(ALIASES[alias], execution)[0]


@pytest.mark.parametrize("title,fail_once", [
    ("A step returned an error: a host failed its health checks",
     {"chat2-dialog-server-1": None}),
    ("A step crashed: the SSH server dropped the connection",
     {"chat2-dialog-server-1": lambda: raised(paramiko.SSHException(
         "Error reading SSH protocol banner"))}),
    ("A step timed out", {"chat2-proxy-1": lambda: timed_out(
        3600, stdout="chat2-proxy-1: uploaded 5 files\nchat2-proxy-1: pulling images\n")}),
])
def test_the_deploy_failures_shown_are_what_the_workflow_says(title, fail_once):
    line, alias, command, _, _, shown = troubleshooting(title)
    result = deploy(CannedDialogActions(fail_once=fail_once), tier="small", provider="aws",
                    deployment="chat2")
    assert result.status == "failed"
    assert result.output["failure"] == line
    assert answer_to(alias, command, result.status, result.result) == shown


def test_the_scale_failures_shown_are_what_the_workflow_says():
    line, alias, command, _, _, shown = troubleshooting("A scale step crashed")
    actions = CannedScaleActions(tier="small", deployment="chat2", fail={
        "bootstrap_host:chat2-dialog-server-3": lambda: raised(TimeoutError("timed out"))})
    result = scale(actions, deployment="chat2", role="dialog-server", count=3,
                   reason="asked in chat by %s" % ce.CHAT_USER)
    assert result.output["failure"] == line
    assert answer_to(alias, command, result.status, result.result) == shown

    line, alias, command, _, _, shown = troubleshooting("A misspelled role")
    result = scale(CannedScaleActions(tier="small", deployment="chat2"), deployment="chat2",
                   role="dialog-servers", count=3, reason="asked in chat by %s" % ce.CHAT_USER)
    assert result.output["failure"] == line
    assert answer_to(alias, command, result.status, result.result) == shown


def test_a_misspelled_provider_shown_is_what_the_workflow_says():
    line, alias, command, _, _, shown = troubleshooting("A misspelled provider")
    params, _ = local_runner.prepare_parameters(
        local_runner.load_action_metadata("dialog.deploy"),
        ce.alias_execution(ALIASES[alias], command)["parameters"])
    result = deploy(RealPlan(), **params)
    assert result.output["failure"] == line
    assert answer_to(alias, command, result.status, result.result) == shown


class MistypedInputTestCase(BaseActionTestCase):
    """`dialog plan huge on aws` and `dialog status nosuchdeployment` through st2's alias path
    (extraction, immutable parameters, casts, then st2's parameter validation: it must let
    them through, or Hubot would post its JSON-schema dump) to the real actions, and the answer
    rendered by the alias: one line naming the field, the value and the values it could be.
    `st2 run` with the same values gets the same line as result.error."""

    action_cls = PlanAction
    config = {"profiles": {"default": {"provider": "aws", "region": "us-east-1"}}}

    def run_action(self, cls, parameters, records=()):
        self.action_cls = cls
        self.setUp()
        for name in records:
            self.action_service.set_value(record_key(name), json.dumps(
                {"deployment": name, "tier": "small", "provider": "aws"}), local=False)
        action = self.get_action_instance(config=self.config)
        action.driver = lambda *_: self.fail("a provider call before the input was checked")
        with contextlib.redirect_stdout(io.StringIO()):
            status, result = action.run(**parameters)
        return ("succeeded" if status else "failed"), ce.python_result(result)

    def chat_and_cli(self, cls, alias, command, cli_args, records=()):
        meta = local_runner.load_action_metadata(ALIASES[alias]["action_ref"])
        execution = ce.alias_execution(ALIASES[alias], command)
        chat_params, _ = local_runner.prepare_parameters(meta, execution["parameters"])
        status, result = self.run_action(cls, chat_params, records)
        self.assertEqual(status, "failed")
        message = ce.result_message(ALIASES[alias], ce.finished(execution, status, result))[0]
        cli_params, _ = local_runner.prepare_parameters(
            meta, local_runner.cast_cli_parameters(cli_args, local_runner.parameter_schemas(
                meta)))
        _, cli_result = self.run_action(cls, cli_params, records)
        return message, result["result"]["error"], cli_result["result"]["error"]

    def test_plan_huge_on_aws(self):
        message, error, cli_error = self.chat_and_cli(
            PlanAction, "plan", "dialog plan huge on aws", ["tier=huge", "provider=aws"])
        line = "tier: unknown value 'huge'; allowed values: mini, small, small-failover, production"
        self.assertEqual(message, "Plan huge on aws failed: %s{~}" % line)
        self.assertEqual((error, cli_error), (line, line))
        self.assertEqual(troubleshooting("A misspelled tier")[-1], message)

    def test_plan_with_a_misspelled_provider_or_droplet_class(self):
        message, _, cli_error = self.chat_and_cli(
            PlanAction, "plan", "dialog plan small on azure", ["tier=small", "provider=azure"])
        self.assertEqual(message, "Plan small on azure failed: provider: unknown value 'azure'; "
                                  "allowed values: aws, digitalocean, static{~}")
        message, _, _ = self.chat_and_cli(
            PlanAction, "plan", "dialog plan small on digitalocean droplet_class=optimised",
            ["tier=small", "provider=digitalocean", "droplet_class=optimised"])
        self.assertIn("droplet_class: unknown value 'optimised'; allowed values: standard, "
                      "optimized{~}", message)

    def test_status_of_a_deployment_nobody_deployed(self):
        message, error, cli_error = self.chat_and_cli(
            StatusAction, "status", "dialog status nosuchdeployment",
            ["deployment=nosuchdeployment"], records=["chat2", "lab"])
        line = ("deployment: no deployment named 'nosuchdeployment' is known (dialog.deploy "
                "records each deployment it makes); known deployments: chat2, lab")
        self.assertEqual(message, 'Status of "nosuchdeployment" failed: %s{~}' % line)
        self.assertEqual((error, cli_error), (line, line))
        self.assertEqual(troubleshooting("A deployment name nobody deployed")[-1], message)
        message, _, _ = self.chat_and_cli(StatusAction, "status", "dialog status ghost",
                                          ["deployment=ghost"])
        self.assertTrue(message.endswith("known deployments: none{~}"), message)
