"""The sandbox's internet: Docker's apt repository and the container registries, on one address.

    with Mirror(hosts.internet_address, username="sandbox", password="...") as mirror:
        mirror.apt_repository    # http://<address>/linux  (the profile's docker_apt_repository)
        mirror.registry          # <address>:5000          (the profile's registry)
        mirror.dialog_images     # {"dialog_server": "<address>:5000/dialog/dialog-server:1"...}

``hosts.internet_address`` is chosen when the sandbox starts (hosts.choose_internet_address):
an address outside every VPC that this machine does not use itself.

Apt (port `apt_port`) has the layout of https://download.docker.com/linux: ``<dist>/gpg`` (the
signing key), ``<dist>/dists/<codename>/InRelease`` and ``.../stable/binary-<arch>/Packages``,
and ``<dist>/pool/stable/...`` with the packages docs.docker.com/engine/install/debian installs.
``docker-ce`` is the sandbox's stand-in, devtools/sandbox/fake_docker.py with a config that
points it at this registry; the other four are empty. Hosts install them with the sandbox's
apt-get (devtools/sandbox/apt_standin.py), which checks the InRelease against the key the
install script downloaded. Downloading docker-ce takes `docker_delay` seconds (a real install
takes tens of seconds).

The registry (port `registry_port`) speaks the Docker Registry HTTP API v2 as a registry:2 with
htpasswd does (distribution/distribution, docs/content/about/deploying.md "Native basic
auth"): ``GET /v2/`` answers 200 only with valid basic credentials, else 401 with
``WWW-Authenticate: Basic``; a manifest of a repository under ``dialog/`` on this registry
needs the credentials too (401 ``UNAUTHORIZED`` "authentication required"). It also stands in
for the public registries (docker.io, quay.io: the fake docker sends the registry's name as
the Host header) and serves their images without login. Only images in its catalogue exist
(404 ``MANIFEST_UNKNOWN`` otherwise): the pack's public defaults and Dialog's four images.
Each manifest takes `pull_delay` seconds.

HTTP only: the fake docker's config marks the mirror an insecure registry, as daemon.json's
``insecure-registries`` would; apt accepts http sources. ``requests`` records what was asked
(never a credential) for tests.
"""

import base64
import gzip
import hashlib
import hmac
import http.server
import io
import json
import re
import secrets
import tarfile
import threading
import time

from . import fake_docker

KEY_ID = "7EA0A9C3F273FCD8"  # the id of Docker's real apt signing key; this one is a stand-in
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
                   "docker-compose-plugin")
DIALOG_NAMESPACE = "dialog"
DIALOG_REPOSITORIES = {"dialog_server": "dialog-server", "web_app": "web-app",
                       "dashboard": "dashboard", "push": "push"}
DIALOG_TAG = "1"


def _public_defaults():
    from lib.render import DEFAULT_IMAGES  # pylint: disable=import-outside-toplevel
    return list(DEFAULT_IMAGES.values())


def _key(image):
    registry, repository, reference = fake_docker.parse_reference(image)
    return "%s/%s:%s" % (registry, repository, reference)


class Mirror:  # pylint: disable=too-many-instance-attributes
    """Apt repository and registry on bind_address; see the module docstring."""

    def __init__(self, bind_address, apt_port=80, registry_port=5000, username="sandbox",
                 password=None, docker_delay=0.0, pull_delay=0.0, public_images=None,
                 python=None):
        self.address = bind_address
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.docker_delay = float(docker_delay)
        self.pull_delay = float(pull_delay)
        self.requests = []
        self._lock = threading.Lock()
        self._servers = []
        self._apt = self._serve(apt_port, _AptHandler)
        self._registry = self._serve(registry_port, _RegistryHandler)
        self.apt_port = self._apt.server_address[1]
        self.registry_port = self._registry.server_address[1]
        self.registry = "%s:%d" % (bind_address, self.registry_port)
        self.dialog_images = {
            key: "%s/%s/%s:%s" % (self.registry, DIALOG_NAMESPACE, name, DIALOG_TAG)
            for key, name in DIALOG_REPOSITORIES.items()}
        public = _public_defaults() if public_images is None else list(public_images)
        self.catalogue = {_key(image) for image in public + list(self.dialog_images.values())}
        self._packages = self._build_packages(python)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, name="sandbox-mirror",
                             daemon=True).start()

    # ------------------------------------------------------------------------------ public API

    @property
    def apt_repository(self):
        """The base URL the profile's docker_apt_repository names (like
        https://download.docker.com/linux)."""
        port = "" if self.apt_port == 80 else ":%d" % self.apt_port
        return "http://%s%s/linux" % (self.address, port)

    def profile_values(self, password_key="sandbox_registry_password"):
        """(profile fields, {datastore key: value}) a sandbox profile needs to use this mirror:
        Dialog's images from this registry, its login with the password as an st2kv
        reference (store the second dict encrypted), and Docker from this apt repository."""
        return ({"images": dict(self.dialog_images), "registry": self.registry,
                 "registry_username": self.username,
                 "registry_password": "{{ st2kv.system.%s }}" % password_key,
                 "docker_apt_repository": self.apt_repository},
                {password_key: self.password})

    def add_image(self, image):
        """Serve one more image (private when it is under dialog/ on this registry)."""
        self.catalogue.add(_key(image))

    def served(self, kind=None, status=None):
        """The requests answered: [{"server", "method", "path", "host", "status", "auth"}]."""
        with self._lock:
            return [r for r in self.requests if (kind is None or r["server"] == kind)
                    and (status is None or r["status"] == status)]

    def close(self):
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _serve(self, port, handler):
        server = http.server.ThreadingHTTPServer((self.address, port), handler)
        server.daemon_threads = True
        server.mirror = self
        self._servers.append(server)
        return server

    def _build_packages(self, python):
        files = fake_docker.package_files(python, {"mirror": self.registry})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, (data, mode) in sorted(files.items()):
                info = tarfile.TarInfo("usr/local/bin/" + name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                archive.addfile(info, io.BytesIO(data))
        docker = gzip.compress(buffer.getvalue(), mtime=0)
        return {name: docker if name == "docker-ce" else b"" for name in DOCKER_PACKAGES}

    def _record(self, **entry):
        with self._lock:
            self.requests.append(entry)

    def authorized(self, header):
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.username) and \
            hmac.compare_digest(password, self.password)

    def apt_answer(self, path):
        """(status, body, seconds to wait first) for an apt path."""
        match = re.match(r"^/linux/(debian|ubuntu)/(.+)$", path)
        if not match:
            return 404, b"Not Found\n", 0
        rest = match.group(2)
        if rest == "gpg":
            return 200, ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: the sandbox mirror's "
                         "stand-in key\nKey-Id: %s\n-----END PGP PUBLIC KEY BLOCK-----\n"
                         % KEY_ID).encode(), 0
        release = re.match(r"^dists/([a-z]+)/InRelease$", rest)
        if release:
            return 200, ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Docker\n"
                         "Label: Docker CE\nSuite: %s\nCodename: %s\nArchitectures: amd64 arm64"
                         "\nComponents: stable\nSigned-By-Key-Id: %s\n-----BEGIN PGP SIGNATURE"
                         "-----\n-----END PGP SIGNATURE-----\n"
                         % (release.group(1), release.group(1), KEY_ID)).encode(), 0
        if re.match(r"^dists/[a-z]+/stable/binary-[a-z0-9]+/Packages$", rest):
            return 200, self._packages_index().encode(), 0
        pool = re.match(r"^pool/stable/([a-z.-]+)_%s_all\.deb$" % re.escape(
            fake_docker.DOCKER_VERSION), rest)
        if pool and pool.group(1) in self._packages:
            delay = self.docker_delay if pool.group(1) == "docker-ce" else 0
            return 200, self._packages[pool.group(1)], delay
        return 404, b"Not Found\n", 0

    def _packages_index(self):
        stanzas = []
        for name, data in sorted(self._packages.items()):
            stanzas.append("Package: %s\nVersion: 5:%s-1\nArchitecture: all\nFilename: "
                           "pool/stable/%s_%s_all.deb\nSize: %d\nSHA256: %s\n" % (
                               name, fake_docker.DOCKER_VERSION, name,
                               fake_docker.DOCKER_VERSION, len(data),
                               hashlib.sha256(data).hexdigest()))
        return "\n".join(stanzas)

    def registry_answer(self, method, path, host, authorization):
        """(status, headers, body, seconds to wait first) for a registry request."""
        headers = {"Docker-Distribution-Api-Version": "registry/2.0"}
        challenge = dict(headers, **{"WWW-Authenticate": 'Basic realm="Registry Realm"'})
        authorized = self.authorized(authorization)
        if path in ("/v2", "/v2/"):
            if authorized:
                return 200, headers, b"{}", 0
            return 401, challenge, _errors("UNAUTHORIZED", "authentication required"), 0
        match = re.match(r"^/v2/(?P<repo>[a-z0-9._/-]+)/manifests/(?P<ref>[A-Za-z0-9_.:-]+)$",
                         path)
        if not match or method not in ("GET", "HEAD"):
            return 404, headers, _errors("NAME_UNKNOWN", "repository name not known to "
                                         "registry"), 0
        repo, ref = match.group("repo"), match.group("ref")
        private = host == self.registry and repo.startswith(DIALOG_NAMESPACE + "/")
        if private and not authorized:
            return 401, challenge, _errors("UNAUTHORIZED", "authentication required"), 0
        if "%s/%s:%s" % (host, repo, ref) not in self.catalogue:
            return 404, headers, _errors("MANIFEST_UNKNOWN", "manifest unknown"), 0
        body = json.dumps({"schemaVersion": 2, "mediaType":
                           "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + hashlib.sha256(
                               ("%s/%s:%s" % (host, repo, ref)).encode()).hexdigest()},
                           "layers": []}).encode()
        headers["Content-Type"] = "application/vnd.docker.distribution.manifest.v2+json"
        return 200, headers, body, self.pull_delay


def _errors(code, message):
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    kind = None

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def _send(self, status, headers, body, delay):
        if delay:
            time.sleep(delay)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _AptHandler(_Handler):
    def do_GET(self):  # pylint: disable=invalid-name
        mirror = self.server.mirror
        status, body, delay = mirror.apt_answer(self.path.split("?")[0])
        mirror._record(server="apt", method="GET", path=self.path,  # pylint: disable=W0212
                       host=self.headers.get("Host"), status=status, auth=False)
        self._send(status, {"Content-Type": "application/octet-stream"}, body, delay)


class _RegistryHandler(_Handler):
    def _answer(self):
        mirror = self.server.mirror
        authorization = self.headers.get("Authorization")
        status, headers, body, delay = mirror.registry_answer(
            self.command, self.path.split("?")[0], self.headers.get("Host"), authorization)
        mirror._record(server="registry", method=self.command,  # pylint: disable=W0212
                       path=self.path, host=self.headers.get("Host"), status=status,
                       auth=bool(authorization))
        headers.setdefault("Content-Type", "application/json")
        self._send(status, headers, body, delay)

    do_GET = do_HEAD = _answer  # noqa: N815
