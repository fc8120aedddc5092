"""The prom/node-exporter image, played by Debian's prometheus-node-exporter (1.5).

The image's entrypoint is /bin/node_exporter with the service's arguments as flags (the pack's
--path.rootfs=/host and --web.listen-address=<private address>:9100), run as the image's USER
nobody. The host's root is bound read-only at /host by the service's volume, and with the
host's network and processes (network_mode, pid: host) it reports on the sandbox host.
"""

from . import image_name

BINARY = "/usr/bin/prometheus-node-exporter"
START_SECONDS = 30
EXEC_USER = "nobody"


def matches(image):
    return image_name(image) == "prom/node-exporter"


def prepare(container):  # pylint: disable=unused-argument
    """Nothing: the image's entrypoint only picks the program."""


def argv(container):
    command = list(container.command or [])
    if command[:1] in (["/bin/node_exporter"], ["node_exporter"]):
        command = command[1:]
    return [BINARY] + command, "nobody"
