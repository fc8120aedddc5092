"""Docker Engine from Docker's apt repository, or from the operator's mirror of it.

Locked-down networks often reach the internet only through a mirror: the profile's
docker_apt_repository names the base URL that stands for https://download.docker.com/linux
(same layout). The script itself is scripts/install_docker.sh; this module only sets `repo`.
"""

import os
import re
import shlex

from lib.errors import InputError

DEFAULT_APT_REPOSITORY = "https://download.docker.com/linux"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "install_docker.sh")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?$")


def apt_repository(value=None):
    """The repository base URL (no trailing slash); InputError naming the field when it is not
    an http(s) URL."""
    if value in (None, ""):
        return DEFAULT_APT_REPOSITORY
    if not isinstance(value, str) or not URL_RE.match(value):
        raise InputError("docker_apt_repository", "%r is not an http:// or https:// URL of an "
                         "apt repository laid out like %s" % (value, DEFAULT_APT_REPOSITORY))
    return value.rstrip("/")


def docker_body(repository=None):
    """The shell body (run as root under `set -e`) that installs Docker unless present."""
    with open(SCRIPT, encoding="utf-8") as handle:
        script = handle.read()
    return "repo=%s\n%s" % (shlex.quote(apt_repository(repository)), script)
