"""When the sandbox's fake docker counts a real server as started: `up` waits until every
published TCP port accepts a connection, and a server on the host's network may listen on the
host's private address only (node_exporter's --web.listen-address=<private>:9100)."""

import socket

import pytest
from sandbox.real_servers import container

# Linux answers on all of 127.0.0.0/8: 127.0.0.2 plays the host's private address.
PRIVATE = "127.0.0.2"


@pytest.fixture(name="server_on_private_address")
def fixture_server_on_private_address():
    sock = socket.socket()
    try:
        sock.bind((PRIVATE, 0))
    except OSError as exc:
        sock.close()
        pytest.skip("cannot bind %s here: %s" % (PRIVATE, exc))
    sock.listen(4)
    yield sock.getsockname()[1]
    sock.close()


def published(port, host_ip=""):
    return [{"host_ip": host_ip, "host_port": port, "container_port": port, "protocol": "tcp",
             "served": True}]


def test_a_server_on_the_private_address_only_counts_as_started(server_on_private_address):
    port = server_on_private_address
    assert container.listening(published(port), ("127.0.0.1", PRIVATE))


def test_a_port_nobody_listens_on_is_not_started(server_on_private_address):
    # Only loopback is asked: the server on the private address is not seen there.
    assert not container.listening(published(server_on_private_address), ("127.0.0.1",))


def test_a_port_bound_to_an_address_is_asked_there_only(server_on_private_address):
    port = server_on_private_address
    assert container.listening(published(port, PRIVATE), ("127.0.0.1",))
    assert not container.listening(published(port, "127.0.0.1"), ("127.0.0.1", PRIVATE))
