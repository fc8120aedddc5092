"""The official nginx image, played by Debian's nginx (1.22, with libnginx-mod-stream).

The container runs the service's command (the pack's `nginx -c <rendered nginx.conf> -g
"daemon off;"`) with `nginx` being nginx-image.sh, which loads the stream module the image has
built in. The master runs as root, its workers as the configuration's `user nginx` (uid 101 in
the image). As in the image, the logs under /var/log/nginx go to the container's output, and
the configuration the deploy rendered is read as it is: a file nginx refuses stops the
container at start (the fake docker's `up` then fails with nginx's words), and `docker compose
exec nginx nginx -t` / `-s reload` are nginx's own.

Not emulated: the image's /docker-entrypoint.d scripts (they edit /etc/nginx/conf.d/default.conf
and worker counts of the image's own nginx.conf, which a `-c` file does not read).
"""

import os
import pkgutil
import signal

from . import image_name

USERS = {"nginx": (101, 101)}
# nginx's temporary files (Debian: /var/lib/nginx) and logs, per container as in an image.
PRIVATE_DIRS = ("/var/log/nginx", "/var/lib/nginx", "/var/cache/nginx")
STOP_SIGNAL = signal.SIGQUIT  # the image's STOPSIGNAL: graceful shutdown
START_SECONDS = 30
WRAPPER = "/usr/local/bin/nginx"
# Read now: on a sandbox host this package is a zip in /usr/local/bin, which the container's
# namespace covers with its own empty directory before prepare() runs.
WRAPPER_TEXT = pkgutil.get_data(__name__, "nginx-image.sh").decode()


def matches(image):
    return image_name(image) == "nginx"


def prepare(container):
    container.write_file(WRAPPER, WRAPPER_TEXT, mode=0o755)
    # The image links its logs to the container's output (docker logs shows them).
    for name, target in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
        os.symlink(target, os.path.join("/var/log/nginx", name))


def argv(container):
    command = list(container.command or ["nginx", "-g", "daemon off;"])
    if command[0].startswith("-"):
        command = ["nginx"] + command
    return command, "root"
