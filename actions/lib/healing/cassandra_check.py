"""Which ring address a lost Cassandra host had, before its replacement touches the ring.

A stopped instance is still in the provider's inventory with its private address; a
terminated one is not, and then the ring itself tells: the one node that is down (DN) and is
no live host's address. Anything less clear is refused: replacing the wrong address would
take a live node's tokens.
"""

from lib.errors import ResourceFailed


def dead_address(host, hosts, nodes):
    """The private address `host` had in the ring `nodes` (cassandra_ops.parse_status rows),
    given `hosts`, the provider's inventory now. ResourceFailed when it cannot be told."""
    known = {h["name"]: h.get("private_address") for h in hosts}
    if known.get(host):
        return known[host]
    live = {address for name, address in known.items() if name != host and address}
    candidates = sorted(n["address"] for n in nodes
                        if n["state"].startswith("D") and n["address"] not in live)
    if len(candidates) != 1:
        raise ResourceFailed(
            "%s (cassandra): its address is not in the provider's inventory (terminated), and "
            "the ring shows %s down nodes that are no live host's (%s): which one was %s cannot "
            "be told; replace it by hand with dialog.deploy replacing={\"%s\": \"<address>\"}"
            % (host, len(candidates), ", ".join(candidates) or "none", host, host))
    return candidates[0]
