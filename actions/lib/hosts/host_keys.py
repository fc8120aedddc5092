"""SSH host keys pinned per deployment: the first key a host shows is kept in the datastore, a
different key later is refused.

Datastore key `dialog.<deployment>.host_keys` (local=False): JSON {host name: "type base64"}.
A profile's `known_hosts` (a file path or the text of a known_hosts file) pins instead: a host
must then be listed there, under its name or address, with the key it shows. On AWS the first
key seen may be checked against the fingerprints cloud-init prints to the console
(console_fingerprints()).

Whoever answers at a host's address gets the configuration files and the admin password, so a
changed key stops the operation before anything is sent. A host that was rebuilt legitimately
is accepted again once its entry is deleted (the error says how). Keys are public; the error
names fingerprints only.
"""

import base64
import hashlib
import json
import os
import re
import tempfile
import threading

import paramiko

from lib.errors import DialogError

KEY_TEMPLATE = "dialog.%s.host_keys"
CONSOLE_BLOCK_RE = re.compile(r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)"
                              r"-----END SSH HOST KEY FINGERPRINTS-----", re.S)
# cloud-init's lines: "256 SHA256:abc... root@host (ED25519)" (ssh-keygen -l output)
CONSOLE_LINE_RE = re.compile(r"\b\d+\s+(SHA256:[A-Za-z0-9+/]+=*)\s.*\((\w+)\)\s*$")
KEY_TYPES = {"ED25519": "ssh-ed25519", "RSA": "ssh-rsa", "ECDSA": "ecdsa-sha2-nistp256",
             "DSA": "ssh-dss"}
WRITE_TRIES = 5


class HostKeyRefused(DialogError):
    """A host showed a key other than the pinned one (or one no known_hosts lists)."""


def fingerprint(key_text):
    """OpenSSH's SHA256 fingerprint of "type base64": SHA256:<base64 without padding>."""
    blob = base64.b64decode(key_text.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def console_fingerprints(output):
    """{key type ("ssh-ed25519", ...): fingerprint} from the block cloud-init writes to the
    console (EC2 GetConsoleOutput; Debian's cloud images print it); {} without one."""
    found = {}
    match = CONSOLE_BLOCK_RE.search(output or "")
    for line in (match.group(1).splitlines() if match else []):
        parsed = CONSOLE_LINE_RE.search(line.strip())
        if parsed and parsed.group(2).upper() in KEY_TYPES:
            kind = KEY_TYPES[parsed.group(2).upper()]
            found[kind if kind != "ecdsa-sha2-nistp256" else "ecdsa"] = parsed.group(1)
    return found


def check_console(host, key_text, printed):
    """HostKeyRefused when the console printed fingerprints and none matches the key shown;
    nothing when the console printed none (not every image does)."""
    if not printed:
        return
    kind = key_text.split()[0]
    kind = "ecdsa" if kind.startswith("ecdsa-") else kind
    shown = fingerprint(key_text)
    if printed.get(kind) != shown:
        raise HostKeyRefused(
            "%s shows the SSH host key %s, which is not among the fingerprints its console "
            "printed at first boot (%s): someone else may be answering at its address; nothing "
            "was sent to it" % (host, shown, ", ".join(sorted(printed.values()))))


def load_known_hosts(value):
    """paramiko.HostKeys of a profile's known_hosts: a path, or the text of such a file."""
    keys = paramiko.HostKeys()
    if value and "\n" not in value.strip() and os.path.isfile(os.path.expanduser(value)):
        keys.load(os.path.expanduser(value))
        return keys
    with tempfile.NamedTemporaryFile("w", suffix=".known_hosts", delete=False) as handle:
        handle.write(value or "")
    try:
        keys.load(handle.name)
    finally:
        os.unlink(handle.name)
    return keys


class HostKeyNotPinned(DialogError):
    """A watcher (pin_new=False) met a host with no pinned key: only the operation that makes
    the host pins its first key."""


class HostKeyPins:
    """The host keys of one deployment. policy(name, address) is the paramiko policy that
    checks (and on first contact records) the key a host shows.

    pin_new=False (the health sensor): a host with no pin is refused with HostKeyNotPinned
    instead of pinned. The sensor polls hosts while a repair replaces them; had it pinned the
    first key it met after dialog.retire_host forgot the old one, a stale address (the
    floating one, moved to another proxy) could have pinned another machine's key under the
    new host's name, and the deploy making the host would then be refused."""

    def __init__(self, datastore, deployment, known_hosts=None, console=None, pin_new=True):
        self.datastore, self.deployment = datastore, deployment
        self.pin_new = pin_new
        self.key = KEY_TEMPLATE % deployment
        self.known = load_known_hosts(known_hosts) if known_hosts else None
        # console(name) -> {type: fingerprint} printed at first boot ({} when unknown)
        self.console = console
        self.lock = threading.Lock()

    def pinned(self):
        raw = self.datastore.get_value(self.key, local=False)
        return json.loads(raw) if raw else {}

    def check(self, name, address, key_text, port=22):
        """Accept the key `name` (at address) shows, or raise HostKeyRefused."""
        if self.known is not None:
            self._check_known(name, address, key_text, port)
            return
        with self.lock:
            old = self.pinned().get(name)
            if old is None and not self.pin_new:
                raise HostKeyNotPinned(
                    "%s (%s) has no pinned SSH host key yet: the deploy that makes it pins the "
                    "first one; nothing was sent to it" % (name, address))
            if old is None:
                if self.console is not None:
                    check_console(name, key_text, self.console(name) or {})
                self._pin(name, key_text)
                return
        if old.split()[:2] != key_text.split()[:2]:
            raise HostKeyRefused(
                "%s (%s) shows SSH host key %s, but %s was pinned for it on first contact: "
                "someone else may be answering at its address; nothing was sent to it. If the "
                "host was rebuilt, delete its entry %r from the datastore key %s (st2 key get "
                "%s; st2 key set %s '<the JSON without it>') and run again"
                % (name, address, fingerprint(key_text), fingerprint(old), name, self.key,
                   self.key, self.key))

    def _pin(self, name, key_text):
        # The datastore has no compare-and-set and the hosts of a deployment are bootstrapped
        # by parallel actions: write, read back, and merge again until the entry stayed.
        for _ in range(WRITE_TRIES):
            pins = self.pinned()
            if pins.get(name) not in (None, key_text):
                return      # another process pinned first; check() of the next contact judges
            pins[name] = key_text
            self.datastore.set_value(self.key, json.dumps(pins, sort_keys=True), local=False)
            if self.pinned().get(name) == key_text:
                return

    def _check_known(self, name, address, key_text, port):
        kind = key_text.split()[0]
        for label in (name, address if port == 22 else "[%s]:%d" % (address, port)):
            entry = self.known.lookup(label) if label else None
            if entry and kind in entry:
                if entry[kind].get_base64() == key_text.split()[1]:
                    return
                raise HostKeyRefused(
                    "%s (%s) shows SSH host key %s, but the profile's known_hosts lists %s for "
                    "it; nothing was sent to it. If the host was rebuilt, replace its line in "
                    "known_hosts" % (name, address, fingerprint(key_text),
                                     fingerprint("%s %s" % (kind, entry[kind].get_base64()))))
        raise HostKeyRefused(
            "%s (%s) shows SSH host key %s, and the profile's known_hosts has no %s key for it "
            "(looked up as %s); add the host's line, or remove known_hosts from the profile to "
            "pin keys on first contact" % (name, address, fingerprint(key_text), kind,
                                           " and ".join(x for x in (name, address) if x)))

    def policy(self, name, address, port=22):
        pins = self

        class _Pinned(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client, hostname, key):
                shown = "%s %s" % (key.get_name(), key.get_base64())
                pins.check(name or address, address, shown, port)
        return _Pinned()


def forget_host(datastore, deployment, name):
    """Drop one host's pin (dialog.retire_host): the pack itself replaces that machine, so
    the next key at its name is the new machine's, pinned on first contact. True if it had
    one."""
    pins = HostKeyPins(datastore, deployment)
    for _ in range(WRITE_TRIES):
        current = pins.pinned()
        if name not in current:
            return False
        del current[name]
        datastore.set_value(pins.key, json.dumps(current, sort_keys=True), local=False)
        if name not in pins.pinned():
            return True
    return False


def forget(datastore, deployment):
    """Delete a deployment's pinned keys (dialog.destroy): its next hosts are new machines."""
    try:
        return bool(datastore.delete_value(KEY_TEMPLATE % deployment, local=False))
    except Exception:  # pylint: disable=broad-except  # st2 raises when the key is absent
        return False
