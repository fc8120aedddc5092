"""coturn's external address per provider (turnserver.conf): AWS maps a NAT-ed public address
onto the private one, DigitalOcean has the public address on the droplet's own interface, a
static server gets what the operator gave."""

import ipaddress

import pytest

from lib.render import render_host
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
# What coturn answers to these files is checked against Debian's coturn itself in
# tests/test_real_configs.py; here, what the file says.

def voice_conf(tier="small", provider="aws", context=None):
    context = context or make_context(tier)
    context["provider"] = provider
    voice = next(h for h in context["hosts"] if "voice" in h["roles"])
    [conf] = [f["content"] for f in render_host(context, voice["name"])["files"]
              if f["path"] == TURN_CONF]
    return voice, context, conf


def test_every_peer_rule_says_why():
    _, _, conf = voice_conf()
    lines = conf.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith(("denied-peer-ip=",
                                                                   "allowed-peer-ip="))]
    assert len(rules) > 20
    assert all(lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10 for i in rules)


def test_no_peer_range_starts_at_the_unspecified_address():
    """coturn applies a range starting at 0.0.0.0 or :: to every address family (a real coturn
    4.6.1 given denied-peer-ip=::-::1 refuses 8.8.8.8)."""
    _, _, conf = voice_conf()
    starts = [line.split("=", 1)[1].split("-")[0] for line in conf.splitlines()
              if line.startswith(("denied-peer-ip=", "allowed-peer-ip="))]
    assert starts and not [s for s in starts if ipaddress.ip_address(s).is_unspecified]


def test_tcp_relays_are_off():
    _, _, conf = voice_conf()
    assert "no-tcp-relay" in conf.splitlines()


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
    lines = conf.splitlines()
    others = [h["private_address"] for h in context["hosts"] if h is not voice]
    assert others and all("denied-peer-ip=" + a in lines for a in others)
    assert "allowed-peer-ip=" + voice["private_address"] in lines
