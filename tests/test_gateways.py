"""Jump host connections: shared by the sessions of a process, at most CHANNELS_PER_CONNECTION
channels each (OpenSSH's default MaxSessions is 10), closed by their last user."""

from lib.hosts import gateways


class FakeConnection(object):
    def __init__(self):
        self.closed = False
        self.transport = self

    def is_active(self):
        return not self.closed

    def close(self):
        self.closed = True


def test_sessions_share_connections_up_to_the_channel_limit_then_open_another():
    opened = []

    def opener():
        opened.append(FakeConnection())
        return opened[-1]
    key = ("203.0.113.7", 22, "admin")
    users = [gateways.acquire(key, opener) for _ in range(20)]
    limit = gateways.CHANNELS_PER_CONNECTION
    assert len(opened) == -(-20 // limit)
    assert all(users.count(c) <= limit for c in opened)
    for connection in users:
        gateways.release(key, connection)
    assert all(c.closed for c in opened) and key not in gateways._OPEN  # pylint: disable=W0212


def test_a_dead_connection_is_replaced_and_closed_by_its_last_user():
    opened = []

    def opener():
        opened.append(FakeConnection())
        return opened[-1]
    key = ("203.0.113.8", 22, "admin")
    first = gateways.acquire(key, opener)
    first.closed = True                      # the proxy went away under it
    second = gateways.acquire(key, opener)
    assert second is not first and len(opened) == 2
    gateways.release(key, first)
    gateways.release(key, second)
    assert second.closed
