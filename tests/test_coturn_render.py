"""coturn's external address per provider (turnserver.conf): AWS maps a NAT-ed public address
onto the private one, DigitalOcean has the public address on the droplet's own interface, a
static server gets what the operator gave."""

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
