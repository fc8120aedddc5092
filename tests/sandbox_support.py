"""What the tests that boot sandbox hosts share: hosts on the first free network of a list."""

import pytest

from sandbox.hosts import SandboxError, SandboxHosts, preflight


def sandbox_hosts(workdir, cidrs, **options):
    """SandboxHosts(workdir, **options) on the first of `cidrs` no other bridge of this machine
    uses; the test fails with the reason when the machine cannot run sandbox hosts (CI runs as
    root) or every network is taken."""
    problems = preflight()
    if problems:
        pytest.fail("sandbox tests need root and `ip netns` (CI runs as root): "
                    + "; ".join(problems), pytrace=False)
    for cidr in cidrs:
        try:
            return SandboxHosts(workdir, cidr=cidr, **options)
        except SandboxError as exc:
            if "overlaps" not in str(exc):
                raise
    pytest.fail("every network of %s is in use on this machine" % (cidrs,), pytrace=False)
    return None
