"""The chaos harness's own logic, without a sandbox: the probe, the timeline's figures, the
verdict, the fault list, the rule dispatcher and the sandbox lock."""

import fcntl
import json
import os
import sys
import threading
import time

import pytest

DEVTOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "devtools")
if DEVTOOLS not in sys.path:
    sys.path.insert(0, DEVTOOLS)

# pylint: disable=wrong-import-position
from chaos import faults, report  # noqa: E402
from chaos.probe import Probe, PsqlClient, postgres_settings  # noqa: E402
from chaos.reactor import Reactor  # noqa: E402
from chaos.sandbox_lock import inherited, sandbox_lock  # noqa: E402
from chaos.timeline import WEB, WRITE, Sample, Timeline, back_after, figures  # noqa: E402


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def samples(kind, outcomes, start=0.0):
    """One sample per second from `start`, ok as `outcomes` says ("." ok, "x" failed)."""
    return [Sample(kind, start + i, start + i + 0.2, c == ".", seq=i + 1)
            for i, c in enumerate(outcomes)]


# --- time to the service answering again -------------------------------------------------------

def test_a_service_that_never_failed_is_back_at_once():
    assert back_after(samples(WEB, "......"), 0.0) == 0.0


def test_back_is_the_first_success_after_the_last_failure():
    # Failures at 1-3 and again at 5 (a flap): back at the success at 6, ended 6.2 s after.
    assert back_after(samples(WEB, ".xxx.x.."), 0.0) == 6.2


def test_failures_that_never_end_mean_never_back():
    assert back_after(samples(WRITE, "..xxxx"), 0.0) is None


# --- one fault's figures ------------------------------------------------------------------------

def _timeline_with_fault():
    clock = Clock(0.0)
    timeline = Timeline(clock=clock)
    for sample in samples(WEB, "..xx......") + samples(WRITE, "...xxxx...."):
        timeline.add(sample)
    timeline.mark("trigger", at=1.5, trigger="dialog.host_down", host="other-host")
    timeline.mark("trigger", at=4.0, trigger="dialog.host_down", host="chaos-proxy-1")
    timeline.mark("trigger", at=4.5, trigger="dialog.recovered", host="chaos-proxy-1")
    timeline.mark("redundant", at=9.0, host="chaos-proxy-1")
    return timeline


def test_figures_of_a_fault():
    timeline = _timeline_with_fault()
    committed = timeline.committed(1.0, 20.0)
    found = set(committed) - {2}  # seq 2 committed at 1 s: lost
    row = figures(timeline, "proxy-1 killed", "chaos-proxy-1", 1.0, 20.0, found)
    assert row.detected == 3.0           # the faulted host's host_down, not the other host's
    assert row.service_back == 6.2       # writes came back last: success at 7, ended 7.2
    assert row.redundant == 8.0
    assert (row.failed_web, row.failed_writes) == (2, 4)
    assert row.lost == 1
    assert row.row()[:5] == ["proxy-1 killed", "chaos-proxy-1", "3.0 s", "6.2 s", "8.0 s"]


def test_a_fault_never_detected_or_repaired_says_never():
    timeline = _timeline_with_fault()
    row = figures(timeline, "cassandra node terminated", "chaos-cassandra-3", 1.0, 20.0, set())
    assert row.detected is None and row.redundant is None
    assert row.row()[2] == "never" and row.row()[4] == "never"


def test_writes_outside_the_window_are_not_the_faults():
    timeline = _timeline_with_fault()
    row = figures(timeline, "x", "chaos-proxy-1", 8.0, 20.0, set())
    assert row.committed == 3 and row.lost == 3 and row.failed_writes == 0


def test_a_probe_in_flight_when_the_next_fault_hits_is_that_faults_failure():
    """A write started 0.1 s before the second fault was injected and timed out 2 s later,
    because of it (seen in a bench run). The first fault's service came back at 3.2 s; the
    failed write belongs to the second fault."""
    timeline = Timeline(clock=Clock(0.0))
    for sample in samples(WRITE, ".xx....") + [
            Sample(WRITE, 6.9, 9.0, False, "timeout expired", seq=99)] + samples(
                WRITE, "x...", start=9.5):
        timeline.add(sample)
    first = figures(timeline, "proxy-1 killed", "chaos-proxy-1", 0.0, 7.0, set())
    second = figures(timeline, "postgres primary killed", "chaos-postgres-1", 7.0, 20.0, set())
    assert first.service_back == 3.2 and first.failed_writes == 2
    assert second.failed_writes == 2 and second.service_back == 3.7


# --- the probe ----------------------------------------------------------------------------------

def test_a_write_counts_as_committed_only_when_its_commit_returned():
    timeline = Timeline()
    answers = iter([(True, "COMMIT"), (False, "ROLLBACK"), RuntimeError("connection reset")])

    def write(seq):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    probe = Probe(timeline, lambda: (True, "HTTP 200"), write)
    results = [probe.write_once() for _ in range(3)]
    assert [s.seq for s in results] == [1, 2, 3]
    assert timeline.committed() == [1]
    assert "RuntimeError: connection reset" in results[2].detail


def test_the_probe_runs_both_checks_every_interval_until_stopped():
    timeline = Timeline()
    probe = Probe(timeline, lambda: (True, "HTTP 200"), lambda seq: (True, "COMMIT"),
                  interval=0.05)
    probe.start()
    time.sleep(0.5)
    probe.stop()
    web, writes = timeline.samples(WEB), timeline.samples(WRITE)
    assert 4 <= len(web) <= 12 and 4 <= len(writes) <= 12
    count = len(web)
    time.sleep(0.15)
    assert len(timeline.samples(WEB)) == count, "stopped"


class ScriptedPsql(PsqlClient):
    def __init__(self, answer):
        super().__init__(where=lambda: ("ns", "/nonexistent"))
        self.answer = answer
        self.statements = []

    def run(self, *statements, tuples_only=False):
        self.statements.append(statements)
        return self.answer


@pytest.mark.parametrize("answer, committed", [
    ((0, ["BEGIN", "INSERT 0 1", "COMMIT"], ""), True),
    # An aborted transaction's COMMIT answers ROLLBACK, and psql exits 0.
    ((0, ["BEGIN", "ROLLBACK"], ""), False),
    ((None, [], "psql: no answer within 4.0s"), False),
    ((2, [], "psql: error: connection to server failed"), False),
])
def test_psql_write_is_committed_only_on_commits_own_tag(answer, committed):
    client = ScriptedPsql(answer)
    assert client.write(7)[0] is committed
    assert client.statements == [("BEGIN", "INSERT INTO chaos_probe (seq) VALUES (7)",
                                  "COMMIT")]


def test_postgres_settings_read_from_a_rendered_server_conf():
    password = 'p"w\\d$1'
    conf = "\n".join([
        "secret = \"s\"", "services {", "  postgresql {",
        "    # PgBouncer on the primary Postgres host (chaos-postgres-2).",
        "    host = \"10.80.1.12\"", "    port = 6432", "    db = \"dialog\"",
        "    user = \"dialog\"", "    password = %s" % json.dumps(password), "  }",
        "  cassandra {", "    host = \"10.80.1.99\"", "  }", "}"])
    assert postgres_settings(conf) == {"host": "10.80.1.12", "port": 6432, "db": "dialog",
                                       "user": "dialog", "password": password}


def test_postgres_settings_name_what_is_missing():
    with pytest.raises(ValueError, match="lacks password"):
        postgres_settings("postgresql {\n host = \"a\"\n port = 1\n db = x\n user = y\n}\n")
    with pytest.raises(ValueError, match="no postgresql block"):
        postgres_settings("cassandra {\n}\n")


def test_psql_keeps_the_password_out_of_argv(tmp_path, monkeypatch):
    conf = tmp_path / "server.conf"
    conf.write_text('postgresql {\n host = "10.0.0.5"\n port = 6432\n db = "dialog"\n'
                    ' user = "dialog"\n password = "hunter2"\n}\n')
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, env=kwargs["env"])
        return type("Done", (), {"returncode": 0, "stdout": "COMMIT\n", "stderr": ""})()

    monkeypatch.setattr("chaos.probe.subprocess.run", fake_run)
    client = PsqlClient(where=lambda: ("dsbns-chaos-dialog-server-1", str(conf)))
    assert client.write(1) == (True, "COMMIT")
    assert seen["argv"][:4] == ["ip", "netns", "exec", "dsbns-chaos-dialog-server-1"]
    assert "hunter2" not in " ".join(seen["argv"])
    assert seen["env"]["PGPASSWORD"] == "hunter2"
    assert seen["argv"][seen["argv"].index("-h") + 1] == "10.0.0.5"


# --- verdict and report -------------------------------------------------------------------------

def _row(fault, back=5.0, redundant=30.0):
    return figures(Timeline(), fault, "h", 0.0, 1.0, set()).__class__(
        fault=fault, host="h", detected=6.0, service_back=back, redundant=redundant,
        failed_web=1, failed_writes=2, committed=10, lost=0)


def test_the_verdict_passes_only_a_whole_run():
    expected = [f.name for f in faults.FAULTS]
    rows = [_row(name) for name in expected]
    assert report.verdict(rows, expected, True, ["Repaired"], 0) == []
    problems = report.verdict(rows[:3] + [_row(expected[3], redundant=None)], expected,
                              False, [], 2)
    assert problems == ["cassandra node terminated: not repaired to full redundancy",
                        "2 committed writes lost", "not every host is healthy at the end",
                        "no chat announcement was made"]
    assert "proxy-1 killed: not repaired" in report.verdict(rows[1:], expected, True, ["a"],
                                                            0)[0]


def test_the_target_applies_to_proxy_and_postgres_faults():
    groups = {f.name: f.group for f in faults.FAULTS}
    rows = [_row("proxy-1 killed", back=61.0), _row("postgres primary killed", back=None),
            _row("dialog server terminated", back=300.0)]
    assert [r.fault for r in report.target_misses(rows, groups)] == [
        "proxy-1 killed", "postgres primary killed"]


def test_anchors_name_the_published_figures():
    text = report.anchors()
    assert "ttl: 30" in text and "advert_int 1 s" in text and "300 s" in text


# --- faults -------------------------------------------------------------------------------------

def test_faults_in_order_and_their_hosts():
    hosts = [{"name": "c-%s-%d" % (g, i), "roles": [g]}
             for g in ("proxy", "postgres", "dialog-server", "cassandra") for i in (1, 2, 3)]
    record = {"postgres_primary": "c-postgres-2"}
    picked = [(f.how, f.host("c", hosts, record)) for f in faults.FAULTS]
    assert picked == [("kill", "c-proxy-1"), ("kill", "c-postgres-2"),
                      ("terminate", "c-dialog-server-3"), ("terminate", "c-cassandra-3")]


def test_unknown_fault_names_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown disk; allowed: proxy, postgres, "
                                         "dialog-server, cassandra"):
        faults.pick_faults(["proxy", "disk"])
    assert [f.group for f in faults.pick_faults(["cassandra", "proxy"])] == [
        "cassandra", "proxy"]


# --- the reactor: sensor loop and rules ---------------------------------------------------------

class FakeSensor:
    def __init__(self, dispatch, script):
        self.dispatch, self.script = dispatch, list(script)
        self.cleaned = False

    def setup(self):
        pass

    def poll(self):
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            self.dispatch(*step)

    def cleanup(self):
        self.cleaned = True


def test_the_reactor_runs_rules_for_each_trigger_and_keeps_polling_after_a_raise():
    lines = []
    down = {"deployment": "c", "host": "c-proxy-1", "group": "proxy"}

    def enforce(trigger, payload, schemas_of):
        if trigger == "dialog.host_down":
            return [("announce_health", "dialog.announce", {"message": "c-proxy-1 is down"}),
                    ("heal_proxy", "dialog.heal_proxy", {"deployment": "c",
                                                         "host": payload["host"]})]
        if trigger == "core.st2.generic.actiontrigger":
            return [("done", "dialog.announce", {"message": "%s %s" % (
                payload["action_ref"], payload["status"])})]
        return []

    timeline = Timeline()
    reactor = Reactor(box=None, timeline=timeline, config={}, say=lines.append, log=None,
                      poll_interval=0.01, enforce=enforce,
                      sensor_factory=lambda dispatch: (
                          FakeSensor(dispatch, [RuntimeError("boom"),
                                                ("dialog.host_down", down)]), None))
    ran = threading.Event()
    reactor.run_action = lambda ref, params: (ran.set() or True, {"output": {}})
    reactor.start()
    assert ran.wait(5)
    time.sleep(0.2)
    reactor.stop(wait=5)
    assert reactor.poll_errors == ["RuntimeError('boom')"]
    assert reactor.polls >= 2
    assert [m for _, m in reactor.announcements] == ["c-proxy-1 is down",
                                                     "dialog.heal_proxy succeeded"]
    (execution,) = reactor.executions
    assert (execution["ref"], execution["host"], execution["status"]) == (
        "dialog.heal_proxy", "c-proxy-1", "succeeded")
    assert timeline.events("trigger", trigger="dialog.host_down", host="c-proxy-1")
    assert timeline.events("repair_finished", host="c-proxy-1", status="succeeded")
    assert reactor.sensor.cleaned


def test_workflow_chat_is_printed_and_core_noop_succeeds():
    lines = []
    reactor = Reactor(box=type("Box", (), {"datastore": None})(), timeline=Timeline(),
                      config={}, say=lines.append, log=None)
    execute = reactor.executor()
    assert execute("core.noop", {})[0] == "succeeded"
    assert execute("chatops.post_message", {"channel": "#c", "message": "Moved 1.2.3.4"})[0] \
        == "succeeded"
    assert lines == ["[chat] Moved 1.2.3.4"]


# --- the sandbox lock ---------------------------------------------------------------------------

def test_a_lock_file_open_in_this_process_counts_as_held_by_the_caller(tmp_path):
    path = str(tmp_path / "sandbox.lock")
    open(path, "w").close()
    assert not inherited(path)
    with open(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert inherited(path)
        with sandbox_lock(path):  # would deadlock if it locked again
            pass


def test_the_lock_is_released_after_the_block(tmp_path):
    path = str(tmp_path / "sandbox.lock")
    with sandbox_lock(path):
        pass
    with open(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_workflow_chat_reaches_the_configured_channel_from_a_child_workflow(tmp_path):
    # dialog.announce's channel defaults to config_context.chat_channel: st2 renders it from
    # the pack config, for a child of a workflow too (the heal workflows announce that way).
    import local_runner  # pylint: disable=import-outside-toplevel
    import workflow_runner  # pylint: disable=import-outside-toplevel
    parent = tmp_path / "parent.yaml"
    parent.write_text("version: 1.0\ntasks:\n  say:\n    action: dialog.announce\n"
                      "    input:\n      message: moved\n")
    reactor = Reactor(box=type("Box", (), {"datastore": local_runner.MemoryDatastore()})(),
                      timeline=Timeline(), config={"chat_channel": "#ops"}, say=[].append,
                      log=None)
    execute, posted = reactor.executor(), []

    def recording(ref, params):
        if ref == "chatops.post_message":
            posted.append(params.get("channel"))
        return execute(ref, params)

    recording.config = getattr(execute, "config", None)
    reactor.executor = lambda: recording
    root = os.path.dirname(DEVTOOLS)
    assert workflow_runner.run_workflow(str(parent), {}, recording, root).succeeded
    assert reactor.run_action("dialog.announce", {"message": "direct"})[0]
    assert posted == ["#ops", "#ops"]
    assert [m for _, m in reactor.announcements] == ["moved", "direct"]
