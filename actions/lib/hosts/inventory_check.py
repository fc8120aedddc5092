"""A host list given to an action is checked against the provider's inventory before any SSH.

Actions such as dialog.bootstrap_host and dialog.status take the deployment's hosts as a
parameter (the workflows pass what dialog.provision read back). The bootstrap sends every
host's configuration, secrets included, to the addresses in that list: a list naming an address
the deployment does not have would send them there. So each given host must be a host of the
inventory under the same name, and every address it names must be one the inventory gives
that host; addresses are compared as parsed IP addresses, never as text.
"""

import ipaddress

from lib.errors import InputError

FIELD = "hosts"


def parse_address(value, where):
    """The ipaddress object of `value`; InputError naming `where` when it is not an address."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(FIELD, "%s: %r is not an IP address" % (where, value))
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InputError(FIELD, "%s: %r is not an IP address" % (where, value)) from None


def _addresses(host, where):
    """(private address or None, [public addresses]) of a host record, parsed."""
    private = host.get("private_address")
    publics = host.get("public_addresses") or []
    if not isinstance(publics, list):
        raise InputError(FIELD, "%s: public_addresses must be a list of IP addresses" % where)
    return (parse_address(private, where + " private_address") if private else None,
            [parse_address(a, where + " public_addresses") for a in publics])


def check_hosts(given, inventory, deployment):
    """Raise InputError (field "hosts") unless every host of `given` is in `inventory` by name
    with only addresses the inventory gives it. Returns `given` unchanged."""
    if not isinstance(given, list):
        raise InputError(FIELD, "must be a list of the deployment's hosts, as dialog.inventory "
                         "returns them")
    known = {}
    for host in inventory:
        private, publics = _addresses(host, "inventory host %s" % host.get("name"))
        known[host["name"]] = ({private} if private else set()) | set(publics)
    names = sorted(known)
    for host in given:
        if not isinstance(host, dict) or not isinstance(host.get("name"), str):
            raise InputError(FIELD, "each host must be an object with a name, as "
                             "dialog.inventory returns them")
        where = "host %s" % host["name"]
        if host["name"] not in known:
            raise InputError(FIELD, "%s is not a host of deployment %s at its provider"
                             % (where, deployment), names, listed="its hosts")
        private, publics = _addresses(host, where)
        for address in ([private] if private else []) + publics:
            if address not in known[host["name"]]:
                raise InputError(FIELD, "%s: address %s is not one the provider gives that host "
                                 "(it has %s); nothing was sent to it"
                                 % (where, address, ", ".join(sorted(
                                     str(a) for a in known[host["name"]])) or "none"))
    return given
