"""The coturn/coturn image, played by Debian's coturn (4.6.1).

The image's entrypoint runs `turnserver` with the service's arguments (the pack's `-c
/etc/coturn/turnserver.conf`). The compose service sets `user: "0:0"` so that coturn can read
its 0600 configuration; it then drops to the file's proc-user/proc-group (nobody/nogroup) by
itself. Its network is the host's, as with the service's `network_mode: host`: it listens on
the host's addresses and relays from the ports the configuration gives.
"""

import os

from . import image_name

# The image's SQLite database directory; coturn opens it even with users in the file.
PRIVATE_DIRS = ("/var/lib/turn", "/var/lib/coturn")
START_SECONDS = 30


def matches(image):
    return image_name(image) == "coturn/coturn"


def prepare(container):  # pylint: disable=unused-argument
    for path in PRIVATE_DIRS:
        os.chown(path, 65534, 65534)


def argv(container):
    command = list(container.command or [])
    if not command or command[0].startswith("-"):
        command = ["turnserver"] + command
    # The service's user: "0:0" (see the module's docstring).
    return command, "root"
