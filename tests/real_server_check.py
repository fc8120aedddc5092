"""Run one of the sandbox's real servers on a rendered file, for tests/test_real_configs.py.

Started by the test under `unshare --mount --net --propagation private` (a throwaway mount and
network namespace), it builds the container's filesystem view as the sandbox's fake docker does
(devtools/sandbox/real_servers: the compose binds at their container paths, /etc/hosts naming
the services, the image's accounts), puts the host's private address on an interface of the
namespace, runs the image's entrypoint work and then:

    real_server_check.py SPEC.json run ARGV...        ARGV inside the container; its status
    real_server_check.py SPEC.json turn USER PASSWORD PEER...
        starts the container's server (coturn), allocates a relay with USER/PASSWORD and asks
        a permission toward each PEER; prints JSON {"relayed": [address, port] | "error",
        "peers": {peer: [code, reason]}}
    real_server_check.py SPEC.json http URL
        starts the container's server, prints the body URL answers (within 20 s)

SPEC.json is container.Container's spec (name, service, image, command, environment, mounts,
address, services, etc_dir, ...).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "devtools"))

# pylint: disable=wrong-import-position
from sandbox import real_servers, stun  # noqa: E402
from sandbox.real_servers import container as real_container  # noqa: E402


def enter(spec):
    module = real_servers.for_image(spec["image"])
    if module is None:
        sys.exit("no real server for image %s" % spec["image"])
    real_container.setup_namespace(spec, module)
    # The address on an interface of its own: coturn takes no listener address from lo.
    for command in (["link", "set", "lo", "up"],
                    ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"],
                    ["addr", "add", spec["address"] + "/32", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["link", "set", "eth0-peer", "up"]):
        subprocess.run(["ip"] + command, check=True)
    box = real_container.Container(spec, module)
    module.prepare(box)
    return module, box


def start(module, box):
    argv, user = module.argv(box)
    # pylint: disable=protected-access
    return subprocess.Popen(argv, env=box.user_env(user),  # pylint: disable=R1732
                            preexec_fn=real_container._become(user), cwd="/",
                            stdout=sys.stderr, stderr=sys.stderr)


def turn(spec, box, server, user, password, peers):
    del box
    deadline, result = time.monotonic() + 20, {"relayed": "not answering", "peers": {}}
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with stun.TurnClient(spec["address"], 3478, user, password, timeout=1) as client:
                result["relayed"] = list(client.allocate())
                result["peers"] = {p: list(client.create_permission(p)) for p in peers}
            break
        except stun.StunError as exc:
            result["relayed"] = str(exc)
            if "refused" in str(exc):
                break
        except OSError as exc:
            result["relayed"] = str(exc)
        time.sleep(0.3)
    return result


def http(url, server):
    deadline, last = time.monotonic() + 20, None
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                return answer.read().decode("utf-8", "replace")
        except OSError as exc:
            last = exc
            time.sleep(0.3)
    return "no answer from %s: %s" % (url, last)


def main(argv):
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    mode, rest = argv[1], argv[2:]
    module, box = enter(spec)
    if mode == "run":
        return subprocess.call(rest, env=box.user_env("root"), cwd="/")
    server = start(module, box)
    try:
        if mode == "turn":
            print(json.dumps(turn(spec, box, server, rest[0], rest[1], rest[2:])))
        else:
            print(http(rest[0], server))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
