"""The sandbox's chaos harness: faults, a client probe, the timeline and the failover figures."""
