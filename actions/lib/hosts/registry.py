"""Registry login and image pulls on a host, before any service starts.

Dialog's images live in the operator's registry, which usually asks for a login. The profile
names it (`registry`, default: the registry part of images.dialog_server) and its credentials
(`registry_username`, `registry_password`, a secret field). DialogAction.deployment_context
carries them as context["registry"] = registry_settings(profile) to prepare_host, never into
rendered files, results or logs: the password reaches the host only on the login command's
stdin (scripts/registry_login.sh) and every error is scrubbed of it.

Pulling before anything starts keeps the slow part (downloads) out of the dependency-ordered
start, and a registry problem shows on every host at once instead of as a `compose up` failure
half way through a deploy.
"""

import os
import re
import shlex

import paramiko

from lib import health
from lib.errors import InputError, ProviderError, ResourceFailed

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
LOGIN_TIMEOUT = 120.0
PULL_TIMEOUT = 1800.0           # every image of a host, pulled side by side
DOCKER_HUB = "docker.io"
SERVER_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
USER_RE = re.compile(r"^[^\s:]{1,256}$")
REDACTED = "********"
AUTH_ERRORS = ("no basic auth credentials", "unauthorized", "authentication required",
               "pull access denied", "denied")

_NOOP = lambda message: None  # noqa: E731


def registry_of(image):
    """The registry host of an image reference, as Docker reads it: a first path component
    with a '.' or ':' (or "localhost") names a registry; anything else is Docker Hub."""
    first, slash, _ = (image or "").partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def registry_settings(profile):
    """{"server", "username", "password"} from a profile: what ensure_login() takes. The server
    defaults to images.dialog_server's registry; username and password come together or not
    at all (InputError naming the field otherwise). None when no credentials are configured."""
    profile = profile or {}
    username, password = profile.get("registry_username"), profile.get("registry_password")
    server = profile.get("registry")
    if server in (None, ""):
        dialog = (profile.get("images") or {}).get("dialog_server")
        server = registry_of(dialog) if dialog else None
    if server is not None and (not isinstance(server, str) or not SERVER_RE.match(server)):
        raise InputError("registry", "%r is not a registry host[:port] (e.g. "
                         "registry.example.com or 10.0.0.5:5000)" % (server,))
    if not username and not password:
        return None
    if not username:
        raise InputError("registry_username", "is needed with registry_password")
    if not password:
        raise InputError("registry_password", "is needed with registry_username (the datastore "
                         "key it names may be missing)")
    if not isinstance(username, str) or not USER_RE.match(username):
        raise InputError("registry_username", "must be 1-256 characters without spaces or ':'")
    if not isinstance(password, str) or "\n" in password or "\r" in password:
        raise InputError("registry_password", "must be a single line (the value is not shown)")
    if server is None:
        raise InputError("registry", "not set and images.dialog_server names no registry to "
                         "log in to")
    return {"server": server, "username": username, "password": password}


def _script(name):
    with open(os.path.join(SCRIPTS, name), encoding="utf-8") as handle:
        return handle.read()


def _redactor(rendered, secret=None):
    scrub = health.redactor(rendered.get("files"))

    def redact(text):
        text = text or ""
        if secret:
            text = text.replace(secret, REDACTED)
        return scrub(text)

    return redact


def _run(connection, rendered, step, script, args, stdin, timeout, redact):
    label = health.host_label(rendered)
    command = "%ssh -c %s %s" % (health.sudo_prefix(connection), shlex.quote(script),
                                 " ".join(shlex.quote(a) for a in [step] + list(args)))
    try:
        return health.remote(connection, command, stdin, timeout)
    except health.RemoteTimeout as exc:
        raise ResourceFailed("%s: %s: %s" % (label, step, redact(str(exc)))) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ProviderError("%s: %s: SSH connection lost: %s"
                            % (label, step, redact(str(exc) or exc.__class__.__name__))) \
            from None


def _marks(out):
    return [line[1:].partition(" ")[::2] for line in (out or "").splitlines()
            if line.startswith("@")]


def ensure_login(connection, rendered, credentials, progress=None):
    """`docker login` on the host with the registry credentials (registry_settings()).

    "none" when no credentials are configured (public images need none; a registry that asks
    for them makes pull_images() fail and say so), "present" when root's Docker config already
    holds exactly these credentials for the server, "logged-in" otherwise. The password goes on
    stdin only. ResourceFailed naming the host and the registry, never the password."""
    say = progress or _NOOP
    if not credentials or not credentials.get("username"):
        return "none"
    server, password = credentials["server"], credentials["password"]
    redact = _redactor(rendered, password)
    label = health.host_label(rendered)
    status, out, err = _run(connection, rendered, "login", _script("registry_login.sh"),
                            [server, credentials["username"]], password + "\n", LOGIN_TIMEOUT,
                            redact)
    state = dict(_marks(out)).get("login")
    if status != 0 or state not in ("present", "logged-in"):
        detail = " / ".join(line.strip() for line in (err or "").splitlines() if line.strip())
        detail = redact(detail)[-400:] or "exit status %s" % status
        hint = " (check registry_username and registry_password)" if "401" in detail or \
            "unauthorized" in detail.lower() else ""
        raise ResourceFailed("%s: registry login to %s as %s failed: %s%s"
                             % (label, server, credentials["username"], detail, hint))
    say("%s: registry %s: %s" % (rendered["host"], server,
                                 "logged in" if state == "logged-in" else "login present"))
    return state


def pull_images(connection, rendered, progress=None):
    """Pull rendered["images"] that the host does not have yet, side by side; returns
    {"pulled": [...], "present": [...]}. ResourceFailed naming the host and every image that
    failed with its registry and the daemon's reason (and what to set when it is a login)."""
    say = progress or _NOOP
    images = list(rendered.get("images") or [])
    if not images:
        return {"pulled": [], "present": []}
    redact = _redactor(rendered)
    label = health.host_label(rendered)
    status, out, err = _run(connection, rendered, "pull", _script("pull_images.sh"), images,
                            None, PULL_TIMEOUT, redact)
    marks = _marks(out)
    result = {"pulled": [v for k, v in marks if k == "pulled"],
              "present": [v for k, v in marks if k == "present"]}
    failed = [v.partition(" ") for k, v in marks if k == "failed"]
    if status != 0 and not failed:
        detail = redact(" / ".join(line.strip() for line in (err or "").splitlines()
                                   if line.strip()))[-400:]
        raise ResourceFailed("%s: pulling images failed: %s" % (
            label, detail or "exit status %s" % status))
    if failed:
        reasons = []
        for image, _, reason in failed:
            server = registry_of(image)
            hint = ""
            if any(word in reason.lower() for word in AUTH_ERRORS):
                hint = " (registry %s wants a login: set the profile's registry, " \
                       "registry_username and registry_password)" % server
            reasons.append("%s from %s: %s%s" % (image, server, redact(reason) or "failed",
                                                 hint))
        raise ResourceFailed("%s: image pull failed: %s" % (label, "; ".join(reasons)))
    if result["pulled"]:
        say("%s: pulled %d image%s" % (rendered["host"], len(result["pulled"]),
                                       "" if len(result["pulled"]) == 1 else "s"))
    return result
