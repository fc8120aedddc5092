"""Shared SSH connections to jump hosts, one per jump host and process.

Every host behind a proxy is reached over a direct-tcpip channel of an SSH connection to the
proxy. Sessions opened at once (dialog.status checks every host concurrently) share a few
connections instead of opening one each: sshd drops new unauthenticated connections at random
beyond MaxStartups (10 by default, sshd_config(5)). One connection carries at most
CHANNELS_PER_CONNECTION of them, under OpenSSH's default MaxSessions of 10: with more, the
sandbox's real sshd (at OpenSSH's defaults) closed channels mid-command. A connection closes
when its last user releases it; a connection found dead is replaced.
"""

import threading

import fabric

CHANNELS_PER_CONNECTION = 8

_LOCK = threading.Lock()
_OPEN = {}   # key -> [[connection, users], ...]


def _alive(connection):
    return connection.transport is not None and connection.transport.is_active()


def acquire(key, opener):
    """An open connection for `key` with room for one more channel (opened with opener() when
    there is none); release(key, connection) it when done."""
    with _LOCK:
        entries = _OPEN.setdefault(key, [])
        for entry in list(entries):
            if not _alive(entry[0]):
                entries.remove(entry)      # dead: its last user closes it
                if entry[1] <= 0:
                    entry[0].close()
            elif entry[1] < CHANNELS_PER_CONNECTION:
                entry[1] += 1
                return entry[0]
        # Opened under the lock: sessions started together wait for one handshake.
        try:
            connection = opener()
        except BaseException:
            if not entries:
                del _OPEN[key]
            raise
        entries.append([connection, 1])
        return connection


def release(key, connection):
    with _LOCK:
        entry = next((e for e in _OPEN.get(key) or () if e[0] is connection), None)
        if entry is None:
            connection.close()      # replaced meanwhile: its last user closes it
            return
        entry[1] -= 1
        if entry[1] <= 0:
            _OPEN[key].remove(entry)
            if not _OPEN[key]:
                del _OPEN[key]
            connection.close()


class JumpedConnection(fabric.Connection):
    """A fabric Connection whose socket is a channel of a shared jump host connection; closing
    it releases that connection."""

    def attach_jump(self, key, gateway):
        self._dialog_jump = (key, gateway)   # pylint: disable=attribute-defined-outside-init

    def close(self):
        try:
            super().close()
            channel = self.connect_kwargs.get("sock")
            if channel is not None:
                channel.close()     # never opened into a session: still the proxy's channel
        finally:
            jump = getattr(self, "_dialog_jump", None)
            if jump is not None:
                self._dialog_jump = None    # pylint: disable=attribute-defined-outside-init
                release(*jump)


def open_channel(gateway, address, port, timeout):
    """A direct-tcpip channel from the jump host to address:port (what `ssh -J` opens); the
    proxy's sshd makes the TCP connection, so the target sees the proxy's private address."""
    return gateway.transport.open_channel("direct-tcpip", (address, int(port)), ("127.0.0.1", 0),
                                          timeout=timeout)
