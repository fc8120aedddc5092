"""Shared SSH connections to jump hosts, one per jump host and process.

Every host behind a proxy is reached over a direct-tcpip channel of one SSH connection to the
proxy. Sessions opened at once (dialog.status checks every host concurrently) share that
connection instead of opening one each: sshd drops new unauthenticated connections at random
beyond MaxStartups (10 by default, sshd_config(5)), while the channels of one connection are
not limited by MaxSessions, which counts only session channels. The connection closes when its
last user releases it; a connection found dead is replaced.
"""

import threading

import fabric

_LOCK = threading.Lock()
_OPEN = {}   # key -> [connection, users]


def acquire(key, opener):
    """An open connection for `key` (opened with opener() when there is none or it died);
    release(key, connection) it when done."""
    with _LOCK:
        entry = _OPEN.get(key)
        if entry and entry[0].transport is not None and entry[0].transport.is_active():
            entry[1] += 1
            return entry[0]
        if entry:
            del _OPEN[key]
            if entry[1] <= 0:
                entry[0].close()
        # Opened under the lock: sessions started together wait for one handshake.
        connection = opener()
        _OPEN[key] = [connection, 1]
        return connection


def release(key, connection):
    with _LOCK:
        entry = _OPEN.get(key)
        if entry is None or entry[0] is not connection:
            connection.close()      # replaced meanwhile: its last user closes it
            return
        entry[1] -= 1
        if entry[1] <= 0:
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
