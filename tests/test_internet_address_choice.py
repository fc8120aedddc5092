"""The sandbox's internet address is one this machine does not use itself.

A machine behind an egress proxy may resolve its package indexes to a documentation address; a
sandbox holding that same address locally (its firewall refusing everyone without egress) cut
pip and apt on the machine off for as long as it ran. The chooser skips such addresses, the
machine's networks, addresses already configured (another sandbox's) and the sandbox's own
networks. No sandbox, no root: the resolver and the route reader are injected.
"""

import ipaddress
import threading
import time

import pytest

from sandbox.hosts import (INTERNET_CANDIDATES, SandboxError, choose_internet_address,
                           package_index_names, resolve_addresses)

NAMES = ["index.example", "files.example", "debian.example"]
EGRESS_PROXY = INTERNET_CANDIDATES[0]


def networks(*entries):
    """A machine_networks() stand-in: (cidr, kind, line) entries."""
    return lambda: [(ipaddress.ip_network(cidr), kind, line) for cidr, kind, line in entries]


def test_skips_what_the_resolver_gives_and_a_connected_network():
    asked = []

    def resolve(names):
        asked.append(list(names))
        return {"index.example": {EGRESS_PROXY}, "files.example": {EGRESS_PROXY, "10.9.9.9"}}

    connected = ipaddress.ip_network(INTERNET_CANDIDATES[1] + "/24", strict=False)
    chosen = choose_internet_address(
        names=NAMES, resolve=resolve, nameservers=lambda: [],
        networks=networks((str(connected), "address", "4: eth0 inet %s" % connected)))
    assert asked == [NAMES]
    assert chosen == INTERNET_CANDIDATES[2]
    assert chosen != EGRESS_PROXY and ipaddress.ip_address(chosen) not in connected


def test_first_candidate_when_the_machine_uses_none_and_there_is_no_dns():
    assert choose_internet_address(names=NAMES, resolve=lambda names: {},
                                   nameservers=lambda: [],
                                   networks=networks(("192.168.7.0/24", "route", "r"))) \
        == INTERNET_CANDIDATES[0]


def test_skips_configured_addresses_dns_server_and_own_networks_and_says_why_when_none_left():
    first, second, third, fourth, fifth = INTERNET_CANDIDATES
    with pytest.raises(SandboxError) as caught:
        choose_internet_address(
            names=NAMES, resolve=lambda names: {"debian.example": {first}},
            nameservers=lambda: [second],
            networks=networks((third + "/32", "address", "85: dsb1in inet %s/32" % third),
                              (fourth + "/32", "route", "%s dev dsb1br" % fourth)),
            avoid=[ipaddress.ip_network(fifth + "/28", strict=False)])
    message = str(caught.value)
    assert "resolver gives it for debian.example" in message
    assert "%s (this machine's DNS server)" % second in message
    assert "dsb1in" in message and "dsb1br" in message and "sandbox's own network" in message


def test_candidates_are_outside_the_networks_a_vpc_uses():
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                 "192.168.0.0/16", "198.18.0.0/15")]
    for candidate in INTERNET_CANDIDATES:
        assert not any(ipaddress.ip_address(candidate) in net for net in private)


def test_resolving_is_bounded_and_tolerates_failures():
    hang = threading.Event()

    def getaddrinfo(name, *_args):
        if name == "slow.example":
            hang.wait(10)
        if name == "broken.example":
            raise OSError("Temporary failure in name resolution")
        return [(2, 1, 6, "", ("198.51.100.7", 0))]

    started = time.monotonic()
    try:
        found = resolve_addresses(["slow.example", "broken.example", "ok.example"],
                                  timeout=0.5, getaddrinfo=getaddrinfo)
    finally:
        hang.set()
    assert time.monotonic() - started < 2
    assert found == {"ok.example": {"198.51.100.7"}}


def test_names_include_pips_configured_indexes_and_proxies(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\n# index-url = https://commented.example/simple\n"
                      "index-url = https://mirror.example/simple\n"
                      "extra-index-url = https://extra.example/simple file:///opt/local\n")
    names = package_index_names({"PIP_CONFIG_FILE": str(config),
                                 "PIP_EXTRA_INDEX_URL": "https://env.example:8443/simple",
                                 "https_proxy": "proxy.example:3128"})
    for expected in ("mirror.example", "extra.example", "env.example", "proxy.example"):
        assert expected in names
    assert "commented.example" not in names
    try:
        from pip._internal.models.index import PyPI  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    assert PyPI.netloc in names and PyPI.file_storage_domain in names
