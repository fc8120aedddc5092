"""The voice host's TURN relay in the sandbox: a TURN client (long-term credentials) asks for
a permission toward private and public peers, and the relay started from the pack's rendered
turnserver.conf and compose service refuses the private ones with 403.

The relay is Debian's coturn, run by the sandbox's Docker stand-in in place of the coturn/coturn
image (devtools/sandbox/real_servers/coturn.py) from the rendered compose service, bootstrapped
over real SSH. Traffic goes only to the 10.86.0.0/24 host created here.
"""

import pytest
import yaml

from lib import bootstrap
from lib.render import COMPOSE_FILE, render_host
from sandbox import stun
from sandbox_support import sandbox_hosts
from test_render import make_context

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.86.%d.0/24" % third for third in range(0, 250, 10)]
VOICE = "dlg-voice-1"


def voice_files(address):
    """The rendered files of a deployment's voice host whose private address is `address`:
    turnserver.conf as rendered, and a compose file with the rendered coturn service alone
    (the sandbox runs no other service here)."""
    context = make_context("small")
    voice = next(h for h in context["hosts"] if "voice" in h["roles"])
    voice["private_address"], voice["public_addresses"] = address, []
    rendered = render_host(context, voice["name"])
    compose = yaml.safe_load(next(f["content"] for f in rendered["files"]
                                  if f["path"] == COMPOSE_FILE))
    compose["services"] = {"coturn": compose["services"]["coturn"]}
    files = [f for f in rendered["files"] if f["path"].endswith("turnserver.conf")]
    files.append({"path": COMPOSE_FILE, "content": yaml.safe_dump(compose), "mode": 0o644,
                  "secret": False})
    return context, {"host": VOICE, "address": address, "project": "dialog",
                     "compose_file": COMPOSE_FILE, "roles": ["voice"], "files": files,
                     "services": ["coturn"], "checks": []}


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    hosts = sandbox_hosts(tmp_path_factory.mktemp("turn"), CIDRS)
    try:
        address = str(hosts.network.network_address + 31)
        hosts.boot(VOICE, address)
        hosts.wait_ready(VOICE)
        context, rendered = voice_files(address)
        connection = bootstrap.connect(address, "root", key_file=hosts.ssh_key_path,
                                       known_hosts=hosts.known_hosts_path, timeout=10)
        try:
            result = bootstrap.bootstrap_host(connection, rendered, health_timeout=30)
        finally:
            connection.close()
        assert result["compose"] == "started", result
        yield address, context["secrets"], hosts.network
    finally:
        hosts.close()


def test_a_relay_request_toward_a_private_address_is_refused(relay):
    address, secrets, network = relay
    with stun.TurnClient(address, 3478, secrets["turn_username"],
                         secrets["turn_password"]) as client:
        assert client.allocate()[0] == address
        for peer in ("169.254.169.254", "10.0.0.2", "172.17.0.1", "192.168.0.1", "100.64.0.1",
                     "127.0.0.1", str(network.network_address + 32), "fd00:ec2::254"):
            code, reason = client.create_permission(peer)
            # An IPv6 peer on an IPv4 relay: 443 (family mismatch), still no relay.
            assert code in ((443,) if ":" in peer else (403,)), (peer, code, reason)
        assert client.create_permission("8.8.8.8") == (0, "")


def test_a_wrong_credential_gets_no_allocation(relay):
    address, secrets, _ = relay
    with stun.TurnClient(address, 3478, secrets["turn_username"], "not-the-password") as client:
        with pytest.raises(stun.StunError, match="401"):
            client.allocate()
