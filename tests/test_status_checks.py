"""dialog.status's per-host checks: a connection that drops mid-check is asked again on a new
one, and a host that keeps dropping is reported as that host's error, never as a failure of
the whole status (the CI run that found it: "deployment auto: the connection failed:
EOFError")."""

import contextlib
import json

from lib import operations

HOSTS = [{"name": "dialog-proxy-1", "roles": ["proxy"], "private_address": "10.0.1.10",
          "public_addresses": ["198.51.100.7"]},
         {"name": "dialog-dialog-server-1", "roles": ["dialog-server"],
          "private_address": "10.0.1.11", "public_addresses": []}]
CHECK = [{"name": "http", "role": "proxy", "ok": True, "detail": "200"}]


def _patch(monkeypatch, drops):
    """run_checks raises EOFError for a host as long as drops[name] > 0 (one per call)."""
    sessions = []

    @contextlib.contextmanager
    def fake_session(host, ssh, hosts=None, **_):
        sessions.append(host["name"])
        yield host["name"]

    def fake_checks(connection, rendered):
        if drops.get(connection, 0) > 0:
            drops[connection] -= 1
            raise EOFError()
        return CHECK

    monkeypatch.setattr(operations, "session", fake_session)
    monkeypatch.setattr(operations, "render_host", lambda context, name: {"host": name})
    monkeypatch.setattr(operations.health, "run_checks", fake_checks)
    return sessions


def test_a_dropped_connection_is_retried_on_a_new_one(monkeypatch):
    sessions = _patch(monkeypatch, {"dialog-proxy-1": 1})
    checked = operations.check_all({"hosts": HOSTS}, {})
    assert [h["healthy"] for h in checked] == [True, True]
    assert sessions.count("dialog-proxy-1") == 2


def test_a_host_that_keeps_dropping_is_that_hosts_error_not_the_status(monkeypatch):
    _patch(monkeypatch, {"dialog-proxy-1": 5})
    checked = operations.check_all({"hosts": HOSTS}, {})
    proxy, server = checked
    assert not proxy["healthy"] and proxy["checks"] == []
    assert "dialog-proxy-1: the SSH connection dropped during the checks (EOFError, 2 attempts)" \
        == proxy["error"]
    assert server["healthy"] and server["error"] is None


def test_a_probe_channel_closed_without_exit_status_is_a_dropped_connection(monkeypatch):
    """paramiko gives -1 when the channel closed before the command ended; that says nothing
    about the host's services, so the check is asked again on a new connection."""
    outcomes = iter([(-1, "", ""), None])

    def remote(connection, command, stdin=None, timeout=60.0):
        outcome = next(outcomes)
        if outcome:
            return outcome
        result = {"health": {"results": CHECK}}
        return 0, operations.health.RESULT_MARK + json.dumps(result) + "\n", ""

    @contextlib.contextmanager
    def fake_session(host, ssh, hosts=None, **_):
        yield type("Connection", (), {"user": "root"})()

    monkeypatch.setattr(operations, "session", fake_session)
    monkeypatch.setattr(operations, "render_host", lambda context, name: {
        "host": name, "roles": ["proxy"], "checks": [{"name": "http", "role": "proxy"}]})
    monkeypatch.setattr(operations.health, "remote", remote)
    monkeypatch.setattr(operations.health, "probe_request", lambda rendered, **_: {})
    monkeypatch.setattr(operations.health, "scrub_results", lambda rendered, results: results)
    [checked] = operations.check_all({"hosts": HOSTS[:1]}, {})
    assert checked["healthy"] and checked["error"] is None
