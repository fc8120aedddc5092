"""The official postgres image, played by Debian's PostgreSQL 15.

The container runs postgres-entrypoint.sh as the image's docker-entrypoint.sh (initdb,
/docker-entrypoint-initdb.d, pg_hba, then `exec gosu postgres postgres ...`), so the server
runs as the `postgres` account (uid 999 as in the image), with the service's command as the
image's CMD. A command that is not the server (the pack's standby script) runs as root like in
the image, and finds `gosu` and `docker-entrypoint.sh` on its PATH.
"""

import os
import pkgutil
import signal

from . import image_name

BIN = "/usr/lib/postgresql/15/bin"
USERS = {"postgres": (999, 999)}
HOMES = {"postgres": "/var/lib/postgresql"}
IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + BIN,
             "PGDATA": "/var/lib/postgresql/data", "LANG": "C.UTF-8",
             "PG_MAJOR": "15"}
PRIVATE_DIRS = ("/var/lib/postgresql", "/docker-entrypoint-initdb.d", "/etc/postgresql")
STOP_SIGNAL = signal.SIGINT  # the image's STOPSIGNAL: fast shutdown
START_SECONDS = 120  # initdb and the init scripts, or a standby's pg_basebackup


# Read now: once the container's namespace is set up, /usr/local/bin (and the zip this package
# may be imported from) is hidden.
SHIMS = {name: pkgutil.get_data(__name__, source).decode() for name, source in (
    ("docker-entrypoint.sh", "postgres-entrypoint.sh"), ("gosu", "gosu.sh"))}


def matches(image):
    return image_name(image) == "postgres"


def prepare(container):
    """The image's filesystem: its entrypoint and gosu on PATH, the socket directory."""
    for name, text in SHIMS.items():
        container.write_file(os.path.join("/usr/local/bin", name), text, mode=0o755)
    os.makedirs("/var/run/postgresql", exist_ok=True)
    os.chown("/var/run/postgresql", *USERS["postgres"])
    os.chmod("/var/run/postgresql", 0o3777)
    os.chown("/var/lib/postgresql", *USERS["postgres"])


def argv(container):
    command = list(container.command or ["postgres"])
    if command[0].startswith("-"):
        command = ["postgres"] + command
    # ENTRYPOINT ["docker-entrypoint.sh"], started as root; the script drops to postgres.
    return ["docker-entrypoint.sh"] + command, "root"
