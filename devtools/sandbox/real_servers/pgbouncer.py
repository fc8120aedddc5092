"""The edoburu/pgbouncer image, played by Debian's PgBouncer.

prepare() does what the image's entrypoint.sh does (github.com/edoburu/docker-pgbouncer):
from DB_HOST (required), DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, AUTH_TYPE, POOL_MODE,
LISTEN_ADDR, LISTEN_PORT, MAX_CLIENT_CONN, DEFAULT_POOL_SIZE, ADMIN_USERS and
IGNORE_STARTUP_PARAMETERS it writes /etc/pgbouncer/userlist.txt (the password kept plain for
AUTH_TYPE plain or scram-sha-256, which PgBouncer needs to speak SCRAM to the server, else its
md5 hash) and /etc/pgbouncer/pgbouncer.ini, unless the files are mounted. Then the image's
CMD, `pgbouncer /etc/pgbouncer/pgbouncer.ini`, runs as the image's user, postgres (uid 70).
"""

import hashlib
import os

from . import image_name

CONFIG_DIR = "/etc/pgbouncer"
USERS = {"postgres": (70, 70)}
EXEC_USER = "postgres"
PRIVATE_DIRS = (CONFIG_DIR,)
BINARY = "/usr/sbin/pgbouncer"
# Optional settings the entrypoint writes only when their variable is set.
OPTIONAL = ("POOL_MODE", "MAX_CLIENT_CONN", "DEFAULT_POOL_SIZE", "MIN_POOL_SIZE",
            "RESERVE_POOL_SIZE", "RESERVE_POOL_TIMEOUT", "MAX_DB_CONNECTIONS",
            "MAX_USER_CONNECTIONS", "SERVER_RESET_QUERY", "SERVER_CHECK_QUERY",
            "SERVER_LIFETIME", "SERVER_IDLE_TIMEOUT", "SERVER_CONNECT_TIMEOUT",
            "QUERY_TIMEOUT", "QUERY_WAIT_TIMEOUT", "CLIENT_IDLE_TIMEOUT",
            "IDLE_TRANSACTION_TIMEOUT", "LOG_CONNECTIONS", "LOG_DISCONNECTIONS",
            "LOG_POOLER_ERRORS", "STATS_USERS", "AUTH_USER", "AUTH_QUERY", "AUTH_HBA_FILE",
            "CLIENT_TLS_SSLMODE", "SERVER_TLS_SSLMODE", "TCP_KEEPALIVE")


def matches(image):
    return image_name(image).rsplit("/", 1)[-1] == "pgbouncer"


def render_ini(env):
    """pgbouncer.ini as the image's entrypoint prints it; ValueError without DB_HOST."""
    if not env.get("DB_HOST"):
        raise ValueError("Setup pgbouncer config error! You must set DB_HOST env")
    lines = ["################## Auto generated ##################", "[databases]",
             "%s = host=%s port=%s user=%s" % (
                 env.get("DB_NAME") or "*", env["DB_HOST"], env.get("DB_PORT") or "5432",
                 env.get("DB_USER") or "postgres")]
    if env.get("CLIENT_ENCODING"):
        lines.append("client_encoding = %s" % env["CLIENT_ENCODING"])
    lines += ["", "[pgbouncer]",
              "listen_addr = %s" % (env.get("LISTEN_ADDR") or "0.0.0.0"),
              "listen_port = %s" % (env.get("LISTEN_PORT") or "5432"),
              "unix_socket_dir =", "user = postgres",
              "auth_file = %s" % (env.get("AUTH_FILE") or CONFIG_DIR + "/userlist.txt"),
              "auth_type = %s" % (env.get("AUTH_TYPE") or "md5")]
    lines += ["%s = %s" % (key.lower(), env[key]) for key in OPTIONAL if env.get(key)]
    lines += ["ignore_startup_parameters = %s"
              % (env.get("IGNORE_STARTUP_PARAMETERS") or "extra_float_digits"),
              "admin_users = %s" % (env.get("ADMIN_USERS") or "postgres"),
              "################## end file ##################"]
    return "\n".join(lines) + "\n"


def userlist_line(env):
    user, password = env.get("DB_USER"), env.get("DB_PASSWORD")
    if not user or not password:
        return None
    if env.get("AUTH_TYPE") in ("plain", "scram-sha-256"):
        secret = password
    else:
        secret = "md5" + hashlib.md5((password + user).encode()).hexdigest()
    return '"%s" "%s"' % (user, secret)


def prepare(container):
    env = container.environment
    auth_file = env.get("AUTH_FILE") or CONFIG_DIR + "/userlist.txt"
    os.chown(CONFIG_DIR, *USERS["postgres"])
    existing = ""
    if os.path.exists(auth_file):
        with open(auth_file, encoding="utf-8") as handle:
            existing = handle.read()
    line = userlist_line(env)
    if line and not any(row.startswith('"%s"' % env["DB_USER"])
                        for row in existing.splitlines()):
        container.write_file(auth_file, existing + line + "\n", mode=0o600, user="postgres")
        print("Wrote authentication credentials to %s" % auth_file)
    ini = os.path.join(CONFIG_DIR, "pgbouncer.ini")
    if not os.path.exists(ini):
        print("Create pgbouncer config in %s" % CONFIG_DIR)
        container.write_file(ini, render_ini(env), mode=0o644, user="postgres")


def argv(container):
    command = list(container.command or [BINARY, CONFIG_DIR + "/pgbouncer.ini"])
    if command[0] in ("pgbouncer", "/usr/bin/pgbouncer"):  # the image's path; Debian's sbin
        command[0] = BINARY
    return command, "postgres"
