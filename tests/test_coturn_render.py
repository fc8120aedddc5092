"""coturn's external address per provider (turnserver.conf): AWS maps a NAT-ed public address
onto the private one, DigitalOcean has the public address on the droplet's own interface, a
static server gets what the operator gave."""

import socket
import threading

import pytest

from lib.render import render_host
from sandbox import coturn_standin, stun
from test_render import make_context

TURN_CONF = "/etc/dialog/turnserver.conf"


def turn_settings(provider, tier="small"):
    context = make_context(tier)
    context["provider"] = provider
    voice = next(h for h in context["hosts"] if "voice" in h["roles"])
    rendered = render_host(context, voice["name"])
    [conf] = [f["content"] for f in rendered["files"] if f["path"] == TURN_CONF]
    lines = [line.strip() for line in conf.splitlines() if line.strip()]
    settings = [line for line in lines if line.startswith(("external-ip=", "relay-ip="))]
    return voice, settings


def test_aws_maps_the_public_address_onto_the_private_one():
    voice, settings = turn_settings("aws")
    assert settings == ["external-ip=%s/%s" % (voice["public_addresses"][0],
                                               voice["private_address"])]


def test_digitalocean_relays_on_the_public_interface_without_a_mapping():
    voice, settings = turn_settings("digitalocean")
    public = voice["public_addresses"][0]
    assert settings == ["external-ip=%s" % public, "relay-ip=%s" % public]


@pytest.mark.parametrize("same", [True, False])
def test_static_takes_the_addresses_as_given(same):
    context = make_context("mini")
    context["provider"] = "static"
    [host] = context["hosts"]
    if same:
        host["private_address"] = host["public_addresses"][0]
    conf = next(f["content"] for f in render_host(context, host["name"])["files"]
                if f["path"] == TURN_CONF)
    expected = "external-ip=%s" % host["private_address"] if same else \
        "external-ip=%s/%s" % (host["public_addresses"][0], host["private_address"])
    assert expected in conf.splitlines() and "relay-ip=" not in conf


# ------------------------------------------------------------------ the relay's peer filter

PRIVATE_PEERS = ["10.0.0.5", "10.255.255.254", "172.16.0.1", "172.17.0.2", "172.31.255.255",
                 "192.168.1.1", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.1.2.3",
                 "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1",
                 "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8", "198.18.0.1",
                 "::", "::1", "fc00::1", "fd00:ec2::254", "fe80::1", "fec0::1", "ff02::1",
                 "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
                 "64:ff9b::a00:1", "2002:a00:1::1", "2001:0:a00:1::1", "2001:db8::1"]
PUBLIC_PEERS = ["8.8.8.8", "1.1.1.1", "52.95.110.1", "2606:4700:4700::1111",
                "2a03:2880:f003:c07:face:b00c::2"]


def voice_conf(tier="small", provider="aws", context=None):
    context = context or make_context(tier)
    context["provider"] = provider
    voice = next(h for h in context["hosts"] if "voice" in h["roles"])
    [conf] = [f["content"] for f in render_host(context, voice["name"])["files"]
              if f["path"] == TURN_CONF]
    return voice, context, conf


@pytest.mark.parametrize("provider", ["aws", "digitalocean"])
def test_the_relay_refuses_every_private_loopback_link_local_and_reserved_peer(provider):
    """What coturn would answer to a CreatePermission, read from the rendered file with the
    sandbox's coturn stand-in (coturn's good_peer_addr(): allowed ranges, then denied)."""
    voice, context, conf = voice_conf(provider=provider)
    settings = coturn_standin.parse_config(conf)
    own = [h["private_address"] for h in context["hosts"]]
    open_to = [p for p in PRIVATE_PEERS + own if not coturn_standin.peer_refused(settings, p)]
    assert open_to == []
    refused = [p for p in PUBLIC_PEERS if coturn_standin.peer_refused(settings, p)]
    assert refused == []
    # Two callers relaying through this deployment: each one's peer is the other's relay
    # address, the voice host's public address.
    assert not coturn_standin.peer_refused(settings, voice["public_addresses"][0])
    assert "no-multicast-peers" in settings["flags"]
    assert "allow-loopback-peers" not in settings["flags"]


def test_every_peer_rule_says_why():
    _, _, conf = voice_conf()
    lines = conf.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith(("denied-peer-ip=",
                                                                   "allowed-peer-ip="))]
    assert len(rules) > 20
    assert all(lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10 for i in rules)


def test_a_static_hosts_public_private_address_is_denied_unless_it_relays():
    """A static server whose only address is public: the other hosts' firewalls let the voice
    host in, so the relay must not reach it; the voice host's own relay address stays open."""
    context = make_context("small")
    context["provider"] = "static"
    publics = iter("52.10.0.%d" % n for n in range(1, 100))
    for host in context["hosts"]:
        host["private_address"] = next(publics)
        host["public_addresses"] = [host["private_address"]]
    voice, _, conf = voice_conf(provider="static", context=context)
    settings = coturn_standin.parse_config(conf)
    others = [h["private_address"] for h in context["hosts"] if h is not voice]
    assert others and all(coturn_standin.peer_refused(settings, a) for a in others)
    assert not coturn_standin.peer_refused(settings, voice["private_address"])


def test_a_turn_client_is_refused_toward_a_private_peer_over_udp():
    """The TURN exchange itself (long-term credentials, then CreatePermission) against the
    stand-in fed with the rendered file, over a loopback UDP socket."""
    _, context, conf = voice_conf()
    server = coturn_standin.TurnServer(coturn_standin.parse_config(conf), "203.0.113.9")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            answer = server.handle(data, addr)
            if answer:
                sock.sendto(answer, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    secrets = context["secrets"]
    try:
        with stun.TurnClient("127.0.0.1", sock.getsockname()[1], secrets["turn_username"],
                             "wrong") as intruder:
            with pytest.raises(stun.StunError, match="401"):
                intruder.allocate()
        with stun.TurnClient("127.0.0.1", sock.getsockname()[1], secrets["turn_username"],
                             secrets["turn_password"]) as client:
            assert client.allocate()[0] == "203.0.113.9"
            assert client.create_permission("169.254.169.254") == (403, "Forbidden IP")
            assert client.create_permission("10.0.0.5") == (403, "Forbidden IP")
            assert client.create_permission("8.8.8.8") == (0, "")
    finally:
        stop.set()
        sock.close()
        thread.join(5)


def test_the_stand_in_refuses_a_cidr_peer_range():
    """coturn takes IP or IP-IP; a CIDR is not a range it understands."""
    with pytest.raises(coturn_standin.ConfigError, match="line 1"):
        coturn_standin.parse_config("denied-peer-ip=10.0.0.0/8\n")
