"""A fake container that runs a real server: its own mount namespace on a sandbox host.

The fake docker starts `supervise(spec_path)` under ``unshare --mount --propagation private``.
Inside that namespace, as Docker gives a container its own filesystem view:

* /tmp, /run, /usr/local/bin (no docker inside a container) and the module's PRIVATE_DIRS
  are empty tmpfs;
* the compose volumes are bind mounts at their container paths (a single file is bound by
  inode, as Docker does, so a file replaced by rename later stays unseen; ``:ro`` is read-only);
  a missing source directory is created, as Docker does;
* /etc/hosts names every service of the compose project with the host's private address, as
  compose's DNS names services on the project network; /etc/passwd and /etc/group hold the
  image's accounts (module USERS);
* the sandbox host's own /etc/dialog, /opt/dialog, /var/lib/dialog, /var/log/dialog are
  hidden (a container sees only what is mounted into it).

The network is the host's (like ``network_mode: host``): a published port must be the same
number inside and out. The supervisor forks the server (prepare() as root, then argv as its
user), passes the stop signal on, and records the exit status, which `docker compose ps`
shows. `docker compose exec` enters the same namespace with nsenter.
"""

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

HIDDEN = ("/etc/dialog", "/opt/dialog", "/var/lib/dialog", "/var/log/dialog")
PRIVATE = ("/tmp", "/run", "/usr/local/bin")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_USERS = {"root": (0, 0), "nobody": (65534, 65534)}


class Container:  # pylint: disable=too-many-instance-attributes
    """What a real-server module sees of its container (see the package docstring)."""

    def __init__(self, spec, module=None):
        self.spec = spec
        self.name = spec["name"]
        self.service = spec["service"]
        self.image = spec["image"]
        self.command = spec["command"]
        self.mounts = [tuple(m) for m in spec["mounts"]]
        self.address = spec["address"]
        self.project_dir = spec["project_dir"]
        self.log_path = spec["log"]
        self.services = spec["services"]
        self.environment = dict(getattr(module, "IMAGE_ENV", {}) if module else {})
        self.environment.update(spec["environment"])
        self.environment.setdefault("PATH", BASE_PATH)
        self.environment.setdefault("HOSTNAME", spec["name"])
        self.environment.setdefault("HOME", "/root")

    def user_env(self, user):
        env = dict(self.environment)
        with contextlib.suppress(KeyError):
            env["HOME"] = pwd.getpwnam(user).pw_dir if user != "root" else "/root"
        return env

    def run(self, argv, user="root", input_text=None, check=True):
        """Run argv inside the container as `user`; its output goes to the container's log.
        Returns the exit status; with check, a non-zero one raises RuntimeError."""
        sys.stdout.flush()
        proc = subprocess.run(argv, env=self.user_env(user), preexec_fn=_become(user),
                              input=input_text, text=True, check=False, cwd="/")
        if check and proc.returncode:
            raise RuntimeError("%s exited with status %d" % (argv[0], proc.returncode))
        return proc.returncode

    def write_file(self, path, text, mode=0o644, user="root"):
        """Write a file inside the container, owned by `user`."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, mode)
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _become(user):
    if user == "root":
        return None
    entry = pwd.getpwnam(user)

    def change():
        os.initgroups(user, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    return change


def _mount(*args, pass_fds=()):
    subprocess.run(["mount"] + list(args), check=True, capture_output=True, text=True,
                   pass_fds=pass_fds)


def _make_target(target, is_dir):
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a", encoding="utf-8").close()  # pylint: disable=consider-using-with


def _accounts(module, etc_dir):
    """The container's /etc/passwd and /etc/group: root, nobody and the image's users."""
    users = dict(BASE_USERS, **getattr(module, "USERS", {}))
    passwd, group = [], []
    for name, (uid, gid) in sorted(users.items(), key=lambda item: item[1]):
        home = "/root" if name == "root" else "/nonexistent"
        with contextlib.suppress(KeyError):
            home = pwd.getpwnam(name).pw_dir if name != "root" else home
        home = getattr(module, "HOMES", {}).get(name, home)
        passwd.append("%s:x:%d:%d:%s:%s:/bin/sh" % (name, uid, gid, name, home))
        group.append("%s:x:%d:" % ("nogroup" if name == "nobody" else name, gid))
    files = {}
    for name, lines in (("passwd", passwd), ("group", group)):
        files[name] = os.path.join(etc_dir, name)
        with open(files[name], "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return files


def _hosts_file(spec, etc_dir):
    path = os.path.join(etc_dir, "hosts")
    names = " ".join(sorted(spec["services"]))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                     "%s\t%s %s\n" % (spec["address"], spec["name"], names))
    return path


def setup_namespace(spec, module):
    """Mount the container's view (call inside the new mount namespace, as root)."""
    etc_dir = spec["etc_dir"]
    os.makedirs(etc_dir, exist_ok=True)
    files = _accounts(module, etc_dir)
    files["hosts"] = _hosts_file(spec, etc_dir)
    for name, source in files.items():
        _mount("--bind", source, "/etc/" + name)
    # Sources are held open first: the tmpfs below may hide their paths (a source in /tmp).
    sources = []
    for source, target, read_only in sorted(spec["mounts"], key=lambda m: m[1].count("/")):
        if not os.path.exists(source):
            os.makedirs(source, exist_ok=True)  # Docker creates a missing bind source dir
        sources.append((os.open(source, os.O_PATH), os.path.isdir(source), target, read_only))
    for target in PRIVATE + tuple(getattr(module, "PRIVATE_DIRS", ())):
        _make_target(target, True)
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", target)
    os.chmod("/tmp", 0o1777)
    for fd, is_dir, target, read_only in sources:
        _make_target(target, is_dir)
        # --no-canonicalize: the kernel follows /proc/self/fd/N to the held source itself.
        _mount("--no-canonicalize", "--bind", "/proc/self/fd/%d" % fd, target, pass_fds=(fd,))
        if read_only:
            _mount("-o", "remount,bind,ro", target)
        os.close(fd)
    for path in HIDDEN:
        if os.path.isdir(path) and not any(m[1] == path or m[1].startswith(path + "/")
                                           for m in spec["mounts"]):
            _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)


def supervise(spec_path, module):
    """The container's first process: set up, fork the server, wait, record its exit."""
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    # Opened before the state directory is hidden by the namespace's mounts.
    exit_file = open(spec["exit_file"], "w", encoding="utf-8")  # pylint: disable=R1732
    container = Container(spec, module)
    _log("real server container %s (service %s, image %s): Debian's server, run by the "
         "sandbox's fake docker" % (spec["name"], spec["service"], spec["image"]))
    try:
        setup_namespace(spec, module)
    except (OSError, subprocess.CalledProcessError) as exc:
        _log("container setup failed: %s %s" % (exc, getattr(exc, "stderr", "") or ""))
        json.dump({"exit": 125, "finished": time.time()}, exit_file)
        return 125
    child = os.fork()
    if child == 0:
        _serve(container, module)
    stop_signal = getattr(module, "STOP_SIGNAL", signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _forward(child, stop_signal))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    _log("container %s exited with status %d" % (spec["name"], code))
    json.dump({"exit": code, "finished": time.time()}, exit_file)
    exit_file.close()
    return code


def _forward(child, sig):
    with contextlib.suppress(OSError):
        os.kill(child, sig)


def _serve(container, module):
    """In the forked child: the image's entrypoint work, then exec the server."""
    try:
        module.prepare(container)
        argv, user = module.argv(container)
        env = container.user_env(user)
        change = _become(user)
        if change:
            change()
        os.chdir("/")
        sys.stdout.flush()
        os.execvpe(argv[0], list(argv), env)
    except Exception as exc:  # pylint: disable=broad-except
        _log("%s: %s" % (type(exc).__name__, exc))
        sys.stdout.flush()
        os._exit(1)  # pylint: disable=protected-access


SUPERVISOR_MARK = " [sandbox]"


def _log(message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    sys.stdout.write("%s %s%s\n" % (stamp, message, SUPERVISOR_MARK))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Used by the fake docker CLI (outside the namespace).

def launch_argv(python, program, spec_path):
    return ["unshare", "--mount", "--propagation", "private", "--",
            python, program, "_real_container", spec_path]


def exit_status(record):
    """The container's recorded exit status, or None (still running / never recorded)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        with open(record["exit_file"], encoding="utf-8") as handle:
            return int(json.load(handle)["exit"])
    return None


def listening(ports, addresses=("127.0.0.1",), timeout=0.2):
    """True when every published TCP port accepts a connection: on its host_ip, or, for a
    port published on every address, on any of `addresses`. A server on the host's network
    may listen on the private address only (node_exporter's --web.listen-address), so
    127.0.0.1 alone would keep `up` waiting for a server that is already serving."""
    for port in ports:
        if port["protocol"] != "tcp" or not port.get("served", True):
            continue
        candidates = [port["host_ip"]] if port["host_ip"] else list(addresses)
        if not any(_accepts(address, port["container_port"], timeout)
                   for address in candidates):
            return False
    return True


def _accepts(address, port, timeout):
    try:
        with socket.create_connection((address.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path, lines=15):
    """The server's last log lines (without the supervisor's own: the server's last words end
    the message, and so the deploy's error)."""
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8", errors="replace") as handle:
            kept = [line for line in handle.read().splitlines()
                    if not line.endswith(SUPERVISOR_MARK) and line.strip()]
            return "\n".join(kept[-lines:])
    return ""


def exec_argv(record, module, user, environment, argv):
    """The command line that runs argv inside the running container, as `user` (default: the
    image's USER), with the container's environment plus `environment`."""
    spec = dict(record["spec"])
    container = Container(spec, module)
    env = dict(container.environment, **environment)
    user = user or getattr(module, "EXEC_USER", "root")
    prefix = ["nsenter", "-t", str(record["pid"]), "-m", "--"]
    if user not in ("root", "0"):
        uid, gid = dict(BASE_USERS, **getattr(module, "USERS", {})).get(user, (user, user))
        prefix += ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--"]
    return prefix + ["env", "-i"] + ["%s=%s" % item for item in sorted(env.items())] + \
        list(argv)
