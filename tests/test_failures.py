"""Every way an action can fail is explained in one line (lib/failures.py, the
dialog.explain_failure action), and the exceptions the pack can foresee come back from the
python actions as the pack's own errors, naming the host or deployment (dialog_action's
reports_errors), never a traceback and never a secret."""

import contextlib
import io
import json
import socket
import traceback

import botocore.exceptions
import paramiko
import pytest
import requests
from azure.core.exceptions import HttpResponseError
from st2tests.base import BaseActionTestCase

from bootstrap_host import BootstrapHostAction
from explain_failure import ExplainFailureAction
from inventory import InventoryAction
from lib import failures
from lib.deployment_secrets import datastore_key
from lib.errors import ProviderError, ResourceFailed

SECRETS = {"postgres_password": "pg-Secret-0123456789",
           "server_key_private": "line-one-of-the-key\nline-two-of-the-key"}
CONFIG = {"profiles": {"default": {"provider": "aws",
                                   "aws_access_key_id": "AKIAEXAMPLEEXAMPLE01",
                                   "aws_secret_access_key": "aws-Secret-0123456789",
                                   "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                                                      "b3BlbnNzaC1rZXktdjEAAAAA\n"
                                                      "-----END OPENSSH PRIVATE KEY-----\n"}}}


def traceback_of(exc):
    try:
        raise exc
    except Exception:  # pylint: disable=broad-except
        return traceback.format_exc()


def crashed(exc, stdout=""):
    return {"result": "None", "stdout": stdout, "stderr": traceback_of(exc), "exit_code": 1}


def timed_out(seconds=600, stdout=""):
    return {"result": "None", "stdout": stdout, "stderr": "", "exit_code": -9,
            "error": "Action failed to complete in %d seconds" % seconds}


def succeeded(value):
    return {"result": value, "stdout": "", "stderr": "", "exit_code": 0}


def returned(error, **more):
    return {"result": dict(more, error=error), "stdout": "", "stderr": "", "exit_code": 0}


# --- one execution ----------------------------------------------------------------------------

@pytest.mark.parametrize("result,expected", [
    (returned("dialog-web-1 (web): check 'web http' failed after 600s: connection refused"),
     "health: dialog-web-1 (web): check 'web http' failed after 600s: connection refused"),
    (crashed(paramiko.SSHException("Error reading SSH protocol banner")),
     "health: crashed: paramiko.ssh_exception.SSHException: Error reading SSH protocol banner"),
    (timed_out(600, stdout="dialog-web-1: waiting for health checks\n"),
     "health: Action failed to complete in 600 seconds; its last output: dialog-web-1: "
     "waiting for health checks"),
    # The runner's own failure (python_runner raising before the action ran).
    ({"error": "Failed to load action class", "traceback": "Traceback ..."},
     "health: Failed to load action class"),
    # sys.exit(1) after logging: the log line, without st2's logger prefix.
    ({"result": "None", "stdout": "", "exit_code": 1,
      "stderr": "st2.actions.python.StatusAction: ERROR    the inventory is empty\n"},
     "health: crashed: the inventory is empty"),
    ({"result": "None", "stdout": "", "stderr": "", "exit_code": 137},
     "health: crashed: exited with code 137 and wrote nothing on stderr"),
    # A subworkflow: its own failure, else its engine errors.
    ({"output": {"failure": "proxies: dialog-proxy-1: crashed: OSError: boom"}, "errors": []},
     "health: proxies: dialog-proxy-1: crashed: OSError: boom"),
    ({"output": None, "errors": [{"message": "Unable to render workflow input"}]},
     "health: Unable to render workflow input"),
    # Shapes nothing should produce are still answered.
    ("Traceback (most recent call last):\nValueError: odd", "health: ValueError: odd"),
    (None, "health: failed, and StackStorm recorded no reason (st2 execution get shows the "
           "run)"),
    (["not", "a", "dict"], "health: failed, and StackStorm recorded no reason (st2 execution "
                           "get shows the run)"),
])
def test_one_execution_is_explained_whatever_its_shape(result, expected):
    assert failures.explain("health", result=result)["failure"] == expected


def test_a_chained_traceback_gives_the_last_exception():
    def chained():
        try:
            try:
                raise KeyError("hosts")
            except KeyError as exc:
                raise RuntimeError("while reading the inventory") from exc
        except RuntimeError:
            return traceback.format_exc()

    result = {"result": "None", "stdout": "", "stderr": chained(), "exit_code": 1}
    assert failures.explain("order", result=result)["failure"] == (
        "order: crashed: RuntimeError: while reading the inventory")


def test_an_input_error_reads_as_the_action_said_it():
    error = "tier: unknown value 'huge'; allowed values: mini, small, small-failover, production"
    result = returned(error, field="tier", allowed=["mini"])
    assert failures.explain("plan", result=result)["failure"] == error


def test_a_host_is_named_once():
    result = returned("dialog-cassandra-4: nodetool decommission failed: UN")
    assert failures.explain("decommission", result=result, host="dialog-cassandra-4")[
        "failure"] == "decommission: dialog-cassandra-4: nodetool decommission failed: UN"
    assert failures.explain("decommission", result=timed_out(7200), host="dialog-cassandra-4")[
        "failure"] == "decommission: dialog-cassandra-4: Action failed to complete in 7200 seconds"


# --- with items ----------------------------------------------------------------------------

def test_items_name_each_failed_host_and_skip_those_that_succeeded_or_never_ran():
    items = ["dialog-web-1", "dialog-voice-1", "dialog-push-1", "dialog-push-2"]
    results = [succeeded({"host": "dialog-web-1", "changed": True}),
               crashed(socket.timeout("timed out")),
               timed_out(3600),
               None]
    explained = failures.explain("services", results=results, items=items)
    assert explained["failure"] == (
        "services: dialog-voice-1: crashed: TimeoutError: timed out; "
        "dialog-push-1: Action failed to complete in 3600 seconds")
    assert [(f["host"], f["kind"]) for f in explained["failures"]] == [
        ("dialog-voice-1", "crashed"), ("dialog-push-1", "runner")]


def test_items_without_names_or_without_a_failed_one_are_still_answered():
    assert failures.explain("drain", results=[None, crashed(EOFError())])["failure"] == (
        "drain: item 1: crashed: EOFError")
    assert failures.explain("drain", results=[succeeded({})], items=["p"])["failure"] == (
        "drain: failed, and none of its 1 items says why")


# --- scrubbing -----------------------------------------------------------------------------

def test_secrets_and_credentials_never_reach_the_explanation():
    scrub = failures.scrubber(failures.secret_values(CONFIG, SECRETS))
    exc = RuntimeError("PGPASSWORD=pg-Secret-0123456789 psql; key aws-Secret-0123456789 and "
                       "line-two-of-the-key; token dop_v1_" + "ab" * 32)
    text = failures.explain("admin", result=crashed(exc), scrub=scrub)["failure"]
    for secret in ("pg-Secret-0123456789", "aws-Secret-0123456789", "line-two-of-the-key",
                   "dop_v1_"):
        assert secret not in text
    assert text.startswith("admin: crashed: RuntimeError: PGPASSWORD=******** psql; key ")


def test_a_long_or_multi_line_reason_becomes_one_bounded_line():
    text = failures.explain("plan", result=returned("x" * 5000 + "\nsecond line"))["failure"]
    assert "\n" not in text and len(text) <= 2 * failures.MAX_REASON


def test_an_expression_in_a_reason_is_not_evaluated_by_orquesta():
    text = failures.explain("plan", result=returned("bad <% ctx(x) %> and {{ y }}"))["failure"]
    assert "<%" not in text and "{{" not in text


# --- the action -------------------------------------------------------------------------------

class ExplainFailureActionTestCase(BaseActionTestCase):
    action_cls = ExplainFailureAction

    def test_masks_the_deployments_secrets_read_from_the_datastore(self):
        self.action_service.set_value(datastore_key("chat2"), json.dumps(SECRETS), local=False,
                                      encrypt=True)
        action = self.get_action_instance(config=CONFIG)
        ok, result = action.run(task="admin", deployment="chat2", result=crashed(RuntimeError(
            "login admin/pg-Secret-0123456789 refused")))
        self.assertTrue(ok)
        self.assertEqual(result["failure"],
                         "admin: crashed: RuntimeError: login admin/******** refused")

    def test_never_fails_even_on_a_deployment_without_secrets_or_a_broken_core(self):
        action = self.get_action_instance(config={})
        ok, result = action.run(task="plan", deployment="Not A Name", result={})
        self.assertTrue(ok)
        self.assertTrue(result["failure"].startswith("plan: "))
        original = failures.explain
        try:
            import explain_failure
            explain_failure.explain = lambda *a, **k: 1 / 0
            ok, result = action.run(task="plan", result={})
        finally:
            explain_failure.explain = original
        self.assertTrue(ok)
        self.assertEqual(result["failure"],
                         "plan: failed; its result could not be read (ZeroDivisionError)")


# --- foreseeable exceptions in the actions ---------------------------------------------------

def client_error():
    return botocore.exceptions.ClientError(
        {"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}},
        "DescribeInstances")


FORESEEN = [
    (paramiko.SSHException("Error reading SSH protocol banner"), ProviderError,
     "SSH failed: SSHException: Error reading SSH protocol banner"),
    (socket.timeout("timed out"), ResourceFailed, "timed out: TimeoutError: timed out"),
    (ConnectionResetError(104, "Connection reset by peer"), ProviderError,
     "the connection failed: ConnectionResetError: [Errno 104] Connection reset by peer"),
    (client_error(), ProviderError, "the AWS request failed: ClientError: An error occurred "
                                    "(RequestLimitExceeded) when calling the DescribeInstances "
                                    "operation: Request limit exceeded."),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="https://ec2.x.amazonaws.com"),
     ProviderError, "the AWS request failed: EndpointConnectionError: Could not connect to "
                    "the endpoint URL: \"https://ec2.x.amazonaws.com\""),
    (HttpResponseError(message="(too_many_requests) API Rate limit exceeded"), ProviderError,
     "the DigitalOcean API request failed: HttpResponseError: (too_many_requests) API Rate "
     "limit exceeded"),
    (requests.exceptions.ConnectionError("Max retries exceeded"), ProviderError,
     "the HTTP request failed: ConnectionError: Max retries exceeded"),
]


class ForeseenExceptionsTestCase(BaseActionTestCase):
    """An exception that escapes the code closest to it comes back from the action as the
    pack's own error, naming what the action worked on; a bug keeps its traceback."""

    action_cls = BootstrapHostAction

    def run_raising(self, cls, exc, config=None, **params):
        self.action_cls = cls
        self.setUp()
        action = self.get_action_instance(config=config or {})

        def explode(*_, **__):
            raise exc

        action.profile = explode
        action.target = explode
        with contextlib.redirect_stdout(io.StringIO()):
            return action.run(**params)

    def test_ssh_provider_http_and_timeouts_name_the_host(self):
        for exc, error_class, text in FORESEEN:
            with self.subTest(exc=type(exc).__name__):
                ok, result = self.run_raising(BootstrapHostAction, exc, deployment="chat2",
                                              host="chat2-web-1", hosts=[])
                self.assertFalse(ok)
                self.assertEqual(result["error"], "chat2-web-1 (deployment chat2): " + text)
                self.assertIsInstance(failures.foreseen_error(exc, "x"), error_class)

    def test_without_a_host_the_deployment_is_named(self):
        ok, result = self.run_raising(InventoryAction, client_error(), deployment="chat2")
        self.assertFalse(ok)
        self.assertTrue(result["error"].startswith("deployment chat2: the AWS request failed: "))

    def test_credentials_in_an_exception_are_masked(self):
        exc = requests.exceptions.HTTPError("401 for url: https://x/?token=dop_v1_%s and "
                                            "aws-Secret-0123456789" % ("ab" * 32))
        ok, result = self.run_raising(InventoryAction, exc, config=CONFIG, deployment="chat2")
        self.assertFalse(ok)
        self.assertNotIn("dop_v1_", result["error"])
        self.assertNotIn("aws-Secret-0123456789", result["error"])

    def test_a_bug_is_not_hidden(self):
        with self.assertRaises(KeyError):
            self.run_raising(InventoryAction, KeyError("hosts"), deployment="chat2")
