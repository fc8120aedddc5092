"""Real Debian servers run by the sandbox's fake docker in place of their images.

`for_image(image)` -> the module that runs a real server for that image, or None (the fake
docker then keeps its stand-in process). A module has:

* ``matches(image) -> bool``;
* ``prepare(container)``: what the image's entrypoint does before the server starts (runs as
  root inside the container's mount namespace; `container` is a container.Container);
* ``argv(container) -> (argv, user)``: the process the container runs, and as whom.

Optional module attributes (container.py reads them): ``USERS`` {name: (uid, gid)} the image's
accounts, ``IMAGE_ENV`` {name: value} the image's ENV lines, ``PRIVATE_DIRS`` container paths
that get their own empty tmpfs, ``EXEC_USER`` (the image's USER, default root),
``STOP_SIGNAL`` (the image's STOPSIGNAL, default SIGTERM), ``START_SECONDS`` (how long `up`
waits for the published TCP ports to listen, default 60).
"""

import importlib

# One module per server; a name whose module is not there yet is skipped.
_NAMES = ("postgres", "pgbouncer", "nginx", "coturn", "node_exporter")


def modules():
    found = []
    for name in _NAMES:
        try:
            found.append(importlib.import_module("." + name, __name__))
        except ModuleNotFoundError as exc:
            if exc.name != "%s.%s" % (__name__, name):
                raise
    return found


def for_image(image):
    """The real-server module for `image`, or None."""
    return next((module for module in modules() if module.matches(image)), None)


def image_name(image):
    """The repository of an image reference without registry, tag or digest:
    "docker.io/library/postgres:15" -> "postgres", "coturn/coturn:4.6" -> "coturn/coturn"."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[:len(ref) - len(last)] + last.split(":", 1)[0]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return "/".join(parts)
