#!/usr/bin/env python3
"""A stand-in for apt-get (and systemctl) on the sandbox hosts.

Sandbox hosts share this machine's /usr, so the real apt-get must never run on them. Each host
gets this program as /usr/local/bin/apt-get (first in PATH and in sudo's secure_path), with a
per-host /etc/apt. It does for real what the pack's Docker install needs from apt:

* ``apt-get update`` reads the one-line ``deb [arch=.. signed-by=..] URI SUITE COMPONENT...``
  sources in /etc/apt/sources.list and /etc/apt/sources.list.d/*.list and fetches, over HTTP
  from the host's own network, ``URI/dists/SUITE/InRelease`` and each component's
  ``binary-ARCH/Packages``. Like apt 2.6 (Debian 12), a source it cannot reach is a warning
  ("Could not connect to ...", "W: Some index files failed to download") and the exit status
  stays 0; an InRelease signed by a key that is not in its signed-by keyring is an error
  ("NO_PUBKEY", "E: The repository ... is not signed.", exit 100).
* ``apt-get install [-y] [--no-install-recommends] PKG...``: a package of the base image
  (ca-certificates, curl, gnupg...) "is already the newest version"; another must be in a
  fetched index ("E: Unable to locate package PKG", exit 100), is downloaded, checked against
  the index's SHA256 and unpacked. The sandbox's packages are gzipped tar files (not .deb)
  whose members may only land in /usr/local/bin, the host's own directory.
* ``-q``, ``-y``, ``-o KEY=VALUE`` are accepted; anything else exits 100.

As ``systemctl`` it answers like systemctl does on a machine whose PID 1 is not systemd (the
sandbox host's PID 1 is sshd): "System has not been booted with systemd as init system",
exit 1. That also keeps a host's `systemctl enable docker` away from this machine's systemd.

The index data and the installed set live in /etc/apt/.sandbox/ (per host).
"""

import glob
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

APT_DIR = os.environ.get("SANDBOX_APT_DIR", "/etc/apt")
STATE = os.path.join(APT_DIR, ".sandbox")
ARCH = "amd64"
# What a Debian or Ubuntu cloud image already has installed.
BASE_PACKAGES = ("apt", "ca-certificates", "curl", "gnupg", "lsb-release", "openssl",
                 "python3", "sudo")
TIMEOUT = 30.0
DEB_RE = re.compile(r"^deb\s+(?:\[(?P<options>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)"
                    r"(?P<components>(?:\s+\S+)*)\s*$")


class AptError(Exception):
    """Printed as "E: ..." with exit status 100."""


def _read_json(path, default):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def sources():
    """[{uri, suite, components, options}] from the one-line sources files."""
    paths = [os.path.join(APT_DIR, "sources.list")]
    paths += sorted(glob.glob(os.path.join(APT_DIR, "sources.list.d", "*.list")))
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = DEB_RE.match(line)
            if not match or not match.group("components").split():
                raise AptError("Malformed entry %d in list file %s (Component)" % (number, path))
            options = dict(item.split("=", 1) for item in (match.group("options") or "").split()
                           if "=" in item)
            found.append({"uri": match.group("uri").rstrip("/"), "suite": match.group("suite"),
                          "components": match.group("components").split(),
                          "options": options})
    return found


def fetch(url):
    """The body at url; OSError with apt's words when the host cannot reach it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OSError("The method driver /usr/lib/apt/methods/%s could not be found."
                      % parts.scheme)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310
            return response.read()
    except urllib.error.HTTPError as exc:
        raise OSError("%d  %s" % (exc.code, exc.reason)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raise OSError("Could not connect to %s:%d (%s). - connect (%s)" % (
            parts.hostname, port, parts.hostname,
            getattr(reason, "strerror", None) or reason)) from None


def _keyring_ids(source):
    signed_by = source["options"].get("signed-by")
    paths = [signed_by] if signed_by else glob.glob(os.path.join(APT_DIR, "trusted.gpg.d", "*"))
    text = ""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text += handle.read()
        except OSError:
            continue
    return set(re.findall(r"^Key-Id: (\S+)$", text, re.M))


def _stanzas(text):
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("Package"):
            yield fields


def update():
    indexes, failed, number = {}, False, 0
    for source in sources():
        number += 1
        base = "%s/dists/%s" % (source["uri"], source["suite"])
        label = "%s %s" % (source["uri"], source["suite"])
        arch = source["options"].get("arch", ARCH)
        try:
            release = fetch(base + "/InRelease").decode("utf-8", "replace")
        except OSError as exc:
            print("Err:%d %s InRelease\n  %s" % (number, label, exc))
            sys.stderr.write("W: Failed to fetch %s/InRelease  %s\n" % (base, exc))
            failed = True
            continue
        print("Get:%d %s InRelease [%d B]" % (number, label, len(release)))
        signer = re.search(r"^Signed-By-Key-Id: (\S+)$", release, re.M)
        if not signer or signer.group(1) not in _keyring_ids(source):
            key = signer.group(1) if signer else "unknown"
            sys.stderr.write("W: GPG error: %s InRelease: The following signatures couldn't be "
                             "verified because the public key is not available: NO_PUBKEY %s\n"
                             % (label, key))
            raise AptError("The repository '%s InRelease' is not signed." % label)
        for component in source["components"]:
            url = "%s/%s/binary-%s/Packages" % (base, component, arch)
            try:
                text = fetch(url).decode("utf-8", "replace")
            except OSError as exc:
                sys.stderr.write("W: Failed to fetch %s  %s\n" % (url, exc))
                failed = True
                continue
            for fields in _stanzas(text):
                indexes[fields["Package"]] = dict(fields, _base=source["uri"])
    _write_json(os.path.join(STATE, "lists.json"), indexes)
    if failed:
        sys.stderr.write("W: Some index files failed to download. They have been ignored, or "
                         "old ones used instead.\n")
    print("Reading package lists...")
    return 0


def _unpack(name, data):
    try:
        archive = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise AptError("Sub-process /usr/bin/dpkg returned an error code (1): %s: not a "
                       "package (%s)" % (name, exc)) from None
    with archive:
        members = archive.getmembers()
        for member in members:
            target = os.path.normpath("/" + member.name)
            if not member.isfile() or os.path.dirname(target) != "/usr/local/bin":
                raise AptError("Sub-process /usr/bin/dpkg returned an error code (1): %s: "
                               "%s is outside /usr/local/bin (the sandbox installs nowhere "
                               "else)" % (name, member.name))
        for member in members:
            target = os.path.normpath("/" + member.name)
            with archive.extractfile(member) as source, open(target + ".dpkg-new", "wb") as out:
                out.write(source.read())
            os.chmod(target + ".dpkg-new", member.mode & 0o7777)
            os.replace(target + ".dpkg-new", target)


def install(names):
    indexes = _read_json(os.path.join(STATE, "lists.json"), {})
    installed = _read_json(os.path.join(STATE, "installed.json"), {})
    print("Reading package lists...\nBuilding dependency tree...")
    missing = [n for n in names if n not in BASE_PACKAGES and n not in installed
               and n not in indexes]
    if missing:
        raise AptError("Unable to locate package %s" % missing[0])
    for name in names:
        if name in BASE_PACKAGES or name in installed:
            print("%s is already the newest version." % name)
            continue
        fields = indexes[name]
        url = "%s/%s" % (fields["_base"], fields["Filename"])
        print("Get:1 %s %s %s [%s B]" % (url, name, fields.get("Version", ""),
                                         fields.get("Size", "?")))
        try:
            data = fetch(url)
        except OSError as exc:
            raise AptError("Failed to fetch %s  %s" % (url, exc)) from None
        if hashlib.sha256(data).hexdigest() != fields.get("SHA256"):
            raise AptError("Failed to fetch %s  Hash Sum mismatch" % url)
        if data:
            _unpack(name, data)
        print("Setting up %s (%s) ..." % (name, fields.get("Version", "")))
        installed[name] = fields.get("Version", "")
        _write_json(os.path.join(STATE, "installed.json"), installed)
    return 0


def apt_get(argv):
    args, words = list(argv), []
    while args:
        arg = args.pop(0)
        if arg == "-o":
            if not args:
                raise AptError("Option -o requires an argument.")
            args.pop(0)
        elif arg.startswith("-o") or arg in ("-q", "-qq", "-y", "--yes", "--no-install-recommends",
                                             "--assume-yes", "--quiet"):
            continue
        elif arg.startswith("-"):
            raise AptError("Command line option '%s' is not understood in combination with the "
                           "other options." % arg)
        else:
            words.append(arg)
    if not words:
        raise AptError("Invalid operation (none given)")
    if os.geteuid() != 0:
        raise AptError("Could not open lock file %s - open (13: Permission denied)" % (
            "/var/lib/apt/lists/lock" if words[0] == "update" else "/var/lib/dpkg/lock-frontend"))
    if words[0] == "update" and len(words) == 1:
        return update()
    if words[0] == "install" and len(words) > 1:
        return install(words[1:])
    raise AptError("Invalid operation %s (the sandbox's apt-get simulates update and install)"
                   % words[0])


def main(program, argv):
    if program == "systemctl":
        sys.stderr.write("System has not been booted with systemd as init system (PID 1). "
                         "Can't operate.\nFailed to connect to bus: Host is down\n")
        return 1
    try:
        return apt_get(argv)
    except AptError as exc:
        sys.stderr.write("E: %s\n" % exc)
        return 100


def install_shims(bin_dir, python=None):
    """Install this program as bin_dir/apt-get and bin_dir/systemctl."""
    python = os.path.abspath(python or sys.executable)
    os.makedirs(bin_dir, exist_ok=True)
    with open(os.path.abspath(__file__), "rb") as source, \
            open(os.path.join(bin_dir, "apt_standin.py"), "wb") as copy:
        copy.write(source.read())
    for program in ("apt-get", "systemctl"):
        path = os.path.join(bin_dir, program)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\n# Sandbox stand-in (devtools/sandbox/apt_standin.py).\n"
                         "exec '%s' \"$(dirname \"$0\")/apt_standin.py\" %s \"$@\"\n"
                         % (python.replace("'", "'\\''"), program))
        os.chmod(path, 0o755)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
