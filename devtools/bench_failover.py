#!/usr/bin/env python3
"""The failover benchmark: `./dialog-local bench failover` runs the sandbox chaos run
(devtools/sandbox_chaos.py: the same deployment, faults, probe and repairs) and prints for each
fault the detection time, the time until the service answered again, the time until full
redundancy, the failed probes and the lost committed writes, next to what Patroni, keepalived
and EC2 Auto Scaling publish for the same kinds of failover.

    ./dialog-local bench failover [faults=proxy,postgres] [wait=600]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox_chaos  # noqa: E402  # pylint: disable=wrong-import-position

if __name__ == "__main__":
    sys.exit(sandbox_chaos.main(sys.argv[1:], bench=True))
