"""A small stateful fake of the DigitalOcean API v2, served over HTTP on 127.0.0.1.

No emulator of the DigitalOcean API exists (unlike moto for AWS), so this stand-in implements
only what the pack's DigitalOcean driver uses, shaped after the public API reference: the same
paths, bodies, envelopes and status codes, pagination (page, per_page, links.pages.next,
meta.total), the tag_name filter on droplets and the name/region filters on volumes (the API
has no tag filter there), and ratelimit-limit/-remaining/-reset headers on every response.
Regions and droplet sizes are the catalog's; as on DigitalOcean, a size is offered in only some
regions (GET /v2/sizes lists them per size) and a droplet of a size outside its region is refused
with 422. GET /v2/account answers the account's limits, /v2/account/keys registers SSH keys. It is
a test, benchmark and sandbox tool, not a promise about DigitalOcean's behaviour.

    with FakeDigitalOcean(boot_delay=0.2, throttle_rate=0.1, seed=1) as fake:
        profile = fake.profile()        # provider, region fra1, endpoint_url, token
        ...                             # drive the real pydo client at fake.url
        fake.resource_counts()          # {"droplets": 0, "volumes": 0, ...}
        fake.reset(limits={"droplet_limit": 3})

Options (constructor or reset(), which returns unnamed ones to the constructor's): token, seed,
throttle_rate (share of requests answered 429 at random, seeded), throttle_reset (seconds to
that 429's ratelimit-reset; every request before it is refused too, as with a real exhausted
limit, and counted in early_requests), boot_delay (seconds a droplet stays 'new'), limits
(droplet_limit, volume_limit, reserved_ip_limit), fail_droplets (names that end in 'archive'),
clock (replaces time.time; a test may share it with the client's sleep), public_network (where
droplets' public IPv4 addresses come from; the sandbox routes it), vpc_ip_range (the range of a
VPC created without one; default: generated /20s in 10.100.0.0/9 ...), size_regions ({size slug:
[region slugs]} replacing SIZE_REGIONS).

Addresses: a droplet's public address is the lowest free one of public_network (after its
gateway, the first address), its private address the lowest free one of its VPC's ip_range
(network address and the first one left out; the last two too, for the sandbox's gateway).
"""

import base64
import hashlib
import ipaddress
import itertools
import json
import math
import os
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

CATALOG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "actions", "lib", "data", "catalog.yaml")


def _catalog_digitalocean():
    """Regions and sizes come from the pack's catalog, the one place slugs are written."""
    with open(CATALOG_FILE, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["providers"]["digitalocean"]
    sizes = {slug: (int(size["memory_gb"] * 1024), size["vcpus"], size["disk_gb"])
             for slug, size in spec["sizes"].items()}   # slug: (memory MB, vcpus, disk GB)
    smallest_standard = min((slug for slug, size in spec["sizes"].items()
                             if size["class"] == "standard"), key=sizes.__getitem__)
    return tuple(spec["regions"]), sizes, smallest_standard


REGIONS, SIZES, _SMALLEST_STANDARD = _catalog_digitalocean()
IMAGES = ("debian-12-x64", "debian-11-x64", "ubuntu-24-04-x64", "ubuntu-22-04-x64")
# Sizes are not offered in every region: GET /v2/sizes lists each size's regions, and a droplet
# created outside them is refused with 422 "Size is not available in this region." (widely
# reported, e.g. the smallest standard size was missing from nyc3 in 2026). That gap is kept
# here so that the pack's region-for-size check has something to find.
SIZE_REGIONS = {slug: [r for r in REGIONS if not (slug == _SMALLEST_STANDARD and r == "nyc3")]
                for slug in SIZES}
DEFAULTS = {"token": "dop_v1_fake0123456789", "seed": 0, "throttle_rate": 0.0,
            "throttle_reset": 1, "boot_delay": 0.0, "limits": None, "fail_droplets": (),
            "clock": time.time, "public_network": "198.18.0.0/16", "vpc_ip_range": None,
            "size_regions": None, "action_delay": 0.05}
# DigitalOcean attaches at most 7 volumes to one droplet (Volumes limits).
VOLUMES_PER_DROPLET = 7
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) "
                        r"([A-Za-z0-9+/]+={0,3})( .*)?$")
LIMITS = {"droplet_limit": 25, "volume_limit": 100, "reserved_ip_limit": 25}
RATE_LIMIT = 5000           # requests per hour, as DigitalOcean documents
MAX_RULES, MAX_FIREWALL_TAGS = 50, 5
COLLECTIONS = ("droplets", "volumes", "firewalls", "reserved_ips", "vpcs", "tags")
FILTERS = {"tag_name": lambda item, value: value in item["tags"],
           "name": lambda item, value: item["name"] == value,
           "region": lambda item, value: item["region"]["slug"] == value}
ROUTES = []


class Refused(Exception):
    def __init__(self, status, ident, message):
        super().__init__(message)
        self.status, self.ident, self.message = status, ident, message


def unprocessable(message):
    return Refused(422, "unprocessable_entity", message)


def not_found():
    return Refused(404, "not_found", "The resource you were accessing could not be found.")


def route(method, template):
    pattern = re.compile("^" + re.sub(r"\{\w+\}", "([^/]+)", template) + "$")

    def register(handler):
        ROUTES.append((method, template, pattern, handler))
        return handler
    return register


def _region(slug, size_regions=None):
    size_regions = size_regions or SIZE_REGIONS
    return {"slug": slug, "name": slug.upper(), "available": True, "features": [],
            "sizes": sorted(s for s, regions in size_regions.items() if slug in regions)}


def fingerprint(public_key):
    """The MD5 fingerprint DigitalOcean shows for a public key (colon-separated hex)."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob).hexdigest()  # nosec - a fingerprint, as DigitalOcean computes it
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _rule(rule, side):
    if rule.get("protocol") not in ("tcp", "udp", "icmp"):
        raise unprocessable("protocol must be tcp, udp or icmp")
    where = rule.get(side) or {}
    if not any(where.get(k) for k in ("addresses", "tags", "droplet_ids", "load_balancer_uids",
                                      "kubernetes_ids")):
        raise unprocessable("every rule needs %s" % side)
    for address in where.get("addresses") or []:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise unprocessable("invalid address %r" % address) from None
    ports = str(rule.get("ports") or "0")
    ports = "0" if rule["protocol"] == "icmp" or ports == "all" else ports
    if not re.match(r"^\d+(-\d+)?$", ports) or max(map(int, ports.split("-"))) > 65535:
        raise unprocessable("invalid ports %r" % ports)
    return {"protocol": rule["protocol"], "ports": ports, side: where}


class FakeDigitalOcean:
    """The fake API. Its state is readable (dicts by id; reserved_ips by address, tags by
    name): droplets, volumes, firewalls, reserved_ips, vpcs, tags; requests logs each request
    (method, path, template, status, body)."""

    def __init__(self, **options):
        self._options = dict(DEFAULTS, **options)
        self._lock = threading.RLock()
        self._server = None
        self.reset()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    @property
    def endpoint_url(self):
        return self.url

    @property
    def token(self):
        return self.opt["token"]

    # Spaces (DigitalOcean's S3 API) is not this fake's: set spaces_endpoint to an S3 server
    # (the AWS emulator's moto) and profile() gives the keys and endpoint to use it.
    spaces_endpoint = None

    def profile(self, **overrides):
        profile = {"name": "fake-do", "provider": "digitalocean", "region": "fra1",
                   "endpoint_url": self.url, "digitalocean_token": self.token,
                   "ssh_key_names": ["dialog-deploy"], "admin_networks": []}
        if self.spaces_endpoint:
            profile.update(spaces_endpoint_url=self.spaces_endpoint,
                           spaces_access_key_id="DO00SPACESKEYID", spaces_secret_access_key="x")
        return dict(profile, **overrides)

    def reset(self, **options):
        """Forget every resource and request; options not given return to the constructor's."""
        with self._lock:
            self.opt = dict(self._options, **options)
            self.limits = dict(LIMITS, **(self.opt["limits"] or {}))
            self.size_regions = {slug: list(regions) for slug, regions in
                                 (self.opt["size_regions"] or SIZE_REGIONS).items()}
            self.public_network = ipaddress.ip_network(self.opt["public_network"])
            self.clock, self.rng = self.opt["clock"], random.Random(self.opt["seed"])
            self.droplets, self.volumes, self.firewalls = {}, {}, {}
            self.reserved_ips, self.vpcs, self.tags = {}, {}, {}
            self.ssh_keys = {1001: {"id": 1001, "name": "dialog-deploy", "fingerprint":
                                    "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa",
                                    "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake"}}
            self.droplet_keys = {}      # droplet id -> public keys installed for root
            self.password_logins = set()    # droplets created with no key: root has a password
            self.requests, self.early_requests = [], 0
            self._ids, self._addresses = itertools.count(3000001), itertools.count(1)
            self._key_ids = itertools.count(1002)
            self._ready, self._window, self._blocked_until = {}, deque(), 0.0
            self.actions, self._pending = {}, {}   # action id -> action; -> (due, apply)

    def _region(self, slug):
        return _region(slug, self.size_regions)

    def resource_counts(self):
        with self._lock:
            return {name: len(getattr(self, name)) for name in COLLECTIONS}

    def request_counts(self, status=None):
        """Counter of 'METHOD /v2/path/{template}' over the log (one status, or all)."""
        return Counter("%s %s" % (r["method"], r["template"]) for r in self.requests
                       if status is None or r["status"] == status)

    def add_ssh_key(self, name, public_key):
        """Register a key as POST /v2/account/keys would (for setting up a sandbox)."""
        with self._lock:
            return self.create_ssh_key({}, {"name": name, "public_key": public_key})[1]["ssh_key"]

    def snapshot(self):
        """What DigitalOcean's own hypervisors know, read under the lock without an API call (no
        request is logged or counted against the rate limit): {"droplets": [{"id", "name",
        "status", "tags", "public", "private", "public_keys", "reserved_ips"}], "volumes":
        [{"id", "name", "size_gigabytes", "droplet_ids"}]}."""
        with self._lock:
            self._tick()
            droplets = []
            for droplet in self.droplets.values():
                v4 = droplet["networks"]["v4"]
                droplets.append({
                    "id": droplet["id"], "name": droplet["name"], "status": droplet["status"],
                    "tags": list(droplet["tags"]),
                    "public": next((n["ip_address"] for n in v4 if n["type"] == "public"), None),
                    "private": next((n["ip_address"] for n in v4 if n["type"] == "private"),
                                    None),
                    "public_keys": list(self.droplet_keys.get(droplet["id"], [])),
                    "reserved_ips": sorted(
                        ip for ip, r in self.reserved_ips.items()
                        if (r["droplet"] or {}).get("id") == droplet["id"])})
            volumes = [{"id": v["id"], "name": v["name"], "size_gigabytes": v["size_gigabytes"],
                        "droplet_ids": list(v["droplet_ids"])} for v in self.volumes.values()]
            return {"droplets": droplets, "volumes": volumes}

    # ---- request handling -----------------------------------------------------------------

    def handle(self, method, target, headers, raw):
        """(status, JSON bytes, extra headers) for one request."""
        parts = urlsplit(target)
        path, query = unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self._tick()
            entry = {"method": method, "path": path, "template": path, "status": None,
                     "body": None}
            self.requests.append(entry)
            try:
                status, body = self._dispatch(method, path, query, headers, raw, entry)
            except Refused as err:
                status, body = err.status, {"id": err.ident, "message": err.message,
                                            "request_id": str(uuid.uuid4())}
            entry["status"] = status
            data = b"" if body is None else json.dumps(body).encode()
            return status, data, self._rate_headers(status)

    def _dispatch(self, method, path, query, headers, raw, entry):
        self._throttle()
        if headers.get("Authorization") != "Bearer %s" % self.token:
            raise Refused(401, "Unauthorized", "Unable to authenticate you")
        for verb, template, pattern, handler in ROUTES:
            match = pattern.match(path)
            if match and verb == method:
                entry["template"] = template
                try:
                    entry["body"] = json.loads(raw or b"{}")
                except ValueError:
                    raise Refused(400, "bad_request", "the body is not JSON") from None
                return handler(self, query, entry["body"], *match.groups())
        raise not_found()

    def _throttle(self):
        now = self.clock()
        if now < self._blocked_until:
            self.early_requests += 1
            raise Refused(429, "too_many_requests", "API Rate limit exceeded.")
        while self._window and self._window[0] <= now - 3600:
            self._window.popleft()
        if len(self._window) >= RATE_LIMIT:
            self._blocked_until = self._window[0] + 3600
            raise Refused(429, "too_many_requests", "API Rate limit exceeded.")
        if self.opt["throttle_rate"] and self.rng.random() < self.opt["throttle_rate"]:
            self._blocked_until = math.ceil(now + self.opt["throttle_reset"])
            raise Refused(429, "too_many_requests", "API Rate limit exceeded.")
        self._window.append(now)

    def _rate_headers(self, status):
        oldest = self._window[0] if self._window else self.clock()
        reset = self._blocked_until if status == 429 else oldest + 3600
        return {"ratelimit-limit": str(RATE_LIMIT),
                "ratelimit-remaining": str(max(0, RATE_LIMIT - len(self._window))),
                "ratelimit-reset": str(int(math.ceil(reset)))}

    def _tick(self):
        """Droplets whose boot time has come turn active (or archive) and get addresses;
        actions whose time has come complete."""
        now = self.clock()
        for action_id, (due, apply) in sorted(self._pending.items()):
            if now >= due:
                del self._pending[action_id]
                apply()
                self.actions[action_id].update(status="completed",
                                               completed_at=self._created_at())
        for droplet_id, ready_at in list(self._ready.items()):
            droplet = self.droplets.get(droplet_id)
            if droplet is not None and now < ready_at:
                continue
            del self._ready[droplet_id]
            if droplet is not None and droplet["name"] in self.opt["fail_droplets"]:
                droplet["status"] = "archive"
            elif droplet is not None:
                droplet["status"], droplet["networks"]["v4"] = "active", self._networks(droplet)

    def _networks(self, droplet):
        vpc = self.vpcs.get(droplet["vpc_uuid"])
        private = ipaddress.ip_network(vpc["ip_range"] if vpc else
                                       self.opt["vpc_ip_range"] or "10.110.0.0/20")
        public = self.public_network
        return [{"ip_address": self._free_address(public, "public"), "type": "public",
                 "netmask": str(public.netmask), "gateway": str(public.network_address + 1)},
                {"ip_address": self._free_address(private, "private"), "type": "private",
                 "netmask": str(private.netmask), "gateway": ""}]

    def _free_address(self, network, kind):
        used = {n["ip_address"] for d in self.droplets.values() for n in d["networks"]["v4"]
                if n["type"] == kind}
        for offset in range(2, network.num_addresses - 2):
            address = str(network.network_address + offset)
            if address not in used:
                return address
        raise unprocessable("no free %s address left in %s" % (kind, network))

    def _page(self, path, query, key, items):
        per_page = min(max(int(query.get("per_page", 20)), 1), 200)
        page = max(int(query.get("page", 1)), 1)
        last = max(1, math.ceil(len(items) / per_page))

        def link(number):
            return "%s%s?%s" % (self.url, path, urlencode(dict(query, page=number,
                                                               per_page=per_page)))
        pages = {"first": link(1), "prev": link(page - 1)} if page > 1 else {}
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        return 200, {key: items[(page - 1) * per_page:page * per_page],
                     "links": {"pages": pages}, "meta": {"total": len(items)}}

    def _get(self, collection, ident):
        items = getattr(self, collection)
        found = items.get(int(ident) if str(ident).isdigit() else ident)
        if found is None:
            raise not_found()
        return found

    def _touch_tags(self, names):
        for name in names or []:
            if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9:_-]{1,255}$", name):
                raise unprocessable("invalid tag name %r: use letters, numbers, colons, dashes "
                                    "and underscores" % (name,))
            self.tags.setdefault(name, {"name": name})

    def _new_id(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def _action(self, kind, resource_type, region):
        stamp = self._created_at()
        return {"action": {"id": next(self._ids), "status": "completed", "type": kind,
                           "started_at": stamp, "completed_at": stamp, "resource_id": None,
                           "resource_type": resource_type, "region": self._region(region),
                           "region_slug": region}}

    def _slow_action(self, kind, resource_type, resource_id, region, apply):
        """An action that runs for action_delay seconds: answered in-progress, its effect
        (apply) seen only once it completed, as DigitalOcean's actions are ("status:
        in-progress, completed or errored"; the reserved IP and droplet action references
        answer 201 with the in-progress action and are polled at GET /v2/actions/{id})."""
        reply = self._action(kind, resource_type, region)
        action = reply["action"]
        action.update(status="in-progress", completed_at=None, resource_id=resource_id)
        self.actions[action["id"]] = action
        self._pending[action["id"]] = (self.clock() + self.opt["action_delay"], apply)
        return dict(action)

    def _busy(self, resource_type, resource_id):
        return any(self.actions[i]["resource_type"] == resource_type and
                   self.actions[i]["resource_id"] == resource_id for i in self._pending)

    @route("GET", "/v2/actions/{id}")
    def get_action(self, _query, _body, action_id):
        return 200, {"action": dict(self._get("actions", action_id))}

    @route("POST", "/v2/droplets/{id}/actions")
    def droplet_action(self, _query, body, droplet_id):
        droplet = self._get("droplets", droplet_id)
        kind = body.get("type")
        if kind not in ("power_off", "power_on"):
            raise unprocessable("type: this fake knows power_off and power_on only")
        if droplet["status"] == "new" or self._busy("droplet", droplet["id"]):
            raise unprocessable("Droplet already has a pending event.")
        status = "off" if kind == "power_off" else "active"

        def apply():
            if droplet["id"] in self.droplets:
                droplet["status"] = status
        return 201, {"action": self._slow_action(kind, "droplet", droplet["id"],
                                                 droplet["region"]["slug"], apply)}

    def _created_at(self):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))

    # ---- tags and VPCs --------------------------------------------------------------------

    @route("POST", "/v2/tags")
    def create_tag(self, _query, body):
        self._touch_tags([body.get("name")])
        return 201, {"tag": self.tags[body["name"]]}

    @route("DELETE", "/v2/tags/{id}")
    def delete_tag(self, _query, _body, name):
        self._get("tags", name)
        del self.tags[name]
        for item in itertools.chain(self.droplets.values(), self.volumes.values()):
            if name in item["tags"]:
                item["tags"].remove(name)
        return 204, None

    @route("POST", "/v2/vpcs")
    def create_vpc(self, _query, body):
        if body.get("region") not in REGIONS:
            raise unprocessable("invalid region %r" % (body.get("region"),))
        if not body.get("name") or any(v["name"] == body["name"] for v in self.vpcs.values()):
            raise Refused(409, "conflict", "a VPC named %r already exists" % body.get("name"))
        vpc_id = self._new_id()
        self.vpcs[vpc_id] = {
            "id": vpc_id, "urn": "do:vpc:" + vpc_id, "name": body["name"], "default": False,
            "region": body["region"], "description": body.get("description", ""),
            "ip_range": body.get("ip_range") or self._vpc_range(),
            "created_at": self._created_at()}
        return 201, {"vpc": self.vpcs[vpc_id]}

    def _vpc_range(self):
        """A range for a VPC created without one: vpc_ip_range unless a VPC has it already,
        else a generated /20 that overlaps no other VPC."""
        taken = [ipaddress.ip_network(v["ip_range"]) for v in self.vpcs.values()]
        candidates = ([self.opt["vpc_ip_range"]] if self.opt["vpc_ip_range"] else []) + \
            ["10.%d.%d.0/20" % (100 + i // 16, (i % 16) * 16) for i in range(2000)]
        for candidate in candidates:
            network = ipaddress.ip_network(candidate)
            if not any(network.overlaps(t) for t in taken):
                return candidate
        raise unprocessable("no free VPC range left")

    @route("DELETE", "/v2/vpcs/{id}")
    def delete_vpc(self, _query, _body, vpc_id):
        self._get("vpcs", vpc_id)
        if any(d["vpc_uuid"] == vpc_id for d in self.droplets.values()):
            raise Refused(403, "forbidden", "Can not delete VPC with members")
        del self.vpcs[vpc_id]
        return 204, None

    # ---- droplets -------------------------------------------------------------------------

    @route("POST", "/v2/droplets")
    def create_droplets(self, _query, body):
        names = body["names"] if "names" in body else [body.get("name")]
        if not names or len(names) > 10:
            raise unprocessable("names: between 1 and 10 droplets may be created at a time")
        self._check_droplet_body(body, names)
        if len(self.droplets) + len(names) > self.limits["droplet_limit"]:
            raise unprocessable("creating this/these droplet(s) will exceed your droplet limit")
        self._touch_tags(body.get("tags"))
        created = [self._new_droplet(name, body) for name in names]
        links = {"actions": [{"id": next(self._ids), "rel": "create", "href": "%s/v2/actions"
                              % self.url} for _ in created]}
        if "names" in body:
            return 202, {"droplets": created, "links": links}
        return 202, {"droplet": created[0], "links": links}

    def _check_droplet_body(self, body, names):
        for field, known in (("region", REGIONS), ("size", SIZES), ("image", IMAGES)):
            if body.get(field) not in known:
                raise unprocessable("You specified an invalid %s for Droplet creation." % field)
        if body["region"] not in self.size_regions.get(body["size"], ()):
            raise unprocessable("Size is not available in this region.")
        if not all(isinstance(n, str) and re.match(r"^[A-Za-z0-9.-]{1,255}$", n) for n in names):
            raise unprocessable("Name Only valid hostname characters are allowed. (a-z, A-Z, "
                                "0-9, . and -)")
        if any(self._ssh_key(key) is None for key in body.get("ssh_keys") or []):
            raise unprocessable("ssh_keys: an SSH key was not found")
        vpc = self.vpcs.get(body.get("vpc_uuid") or "")
        if body.get("vpc_uuid") and (vpc is None or vpc["region"] != body["region"]):
            raise unprocessable("vpc_uuid: no such VPC in region %s" % body["region"])

    def _new_droplet(self, name, body):
        memory, vcpus, disk = SIZES[body["size"]]
        droplet = {
            "id": next(self._ids), "name": name, "memory": memory, "vcpus": vcpus, "disk": disk,
            "locked": False, "status": "new", "created_at": self._created_at(), "features": [],
            "backup_ids": [], "snapshot_ids": [], "next_backup_window": None, "volume_ids": [],
            "image": {"slug": body["image"], "distribution": body["image"].split("-")[0]},
            "size": {"slug": body["size"], "memory": memory, "vcpus": vcpus, "disk": disk},
            "size_slug": body["size"], "networks": {"v4": [], "v6": []},
            "region": self._region(body["region"]), "tags": list(body.get("tags") or []),
            "vpc_uuid": body.get("vpc_uuid") or ""}
        self.droplets[droplet["id"]] = droplet
        # The keys go into root's authorized_keys at first boot, as cloud-init does on DO.
        self.droplet_keys[droplet["id"]] = [self._ssh_key(k)["public_key"]
                                            for k in body.get("ssh_keys") or []]
        if not self.droplet_keys[droplet["id"]]:
            # "If no SSH keys are specified, a root password is emailed" and the image allows
            # password logins over SSH (DigitalOcean's droplet create reference).
            self.password_logins.add(droplet["id"])
        self._ready[droplet["id"]] = self.clock() + self.opt["boot_delay"]
        return droplet

    @route("DELETE", "/v2/droplets")
    def destroy_by_tag(self, query, _body):
        if not query.get("tag_name"):
            raise unprocessable("tag_name is required")
        for droplet in [d for d in self.droplets.values() if query["tag_name"] in d["tags"]]:
            self._forget_droplet(droplet)
        return 204, None

    @route("DELETE", "/v2/droplets/{id}")
    def destroy_droplet(self, _query, _body, droplet_id):
        self._forget_droplet(self._get("droplets", droplet_id))
        return 204, None

    def _forget_droplet(self, droplet):
        """Destroying a droplet detaches its volumes and unassigns its reserved IP."""
        del self.droplets[droplet["id"]]
        self.droplet_keys.pop(droplet["id"], None)
        for volume in self.volumes.values():
            if droplet["id"] in volume["droplet_ids"]:
                volume["droplet_ids"].remove(droplet["id"])
        for address in self.reserved_ips.values():
            if (address["droplet"] or {}).get("id") == droplet["id"]:
                address["droplet"] = None

    # ---- volumes --------------------------------------------------------------------------

    @route("POST", "/v2/volumes")
    def create_volume(self, _query, body):
        name, region, size = body.get("name"), body.get("region"), body.get("size_gigabytes")
        if region not in REGIONS:
            raise unprocessable("invalid region %r" % (region,))
        if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9-]{0,63}$", name):
            raise unprocessable("name: up to 64 lowercase letters, numbers and '-', starting "
                                "with a letter")
        if not isinstance(size, int) or not 1 <= size <= 16384:
            raise unprocessable("size_gigabytes must be between 1 and 16384")
        if any(v["name"] == name and v["region"]["slug"] == region
               for v in self.volumes.values()):
            raise Refused(409, "conflict", "a volume named %r exists in %s" % (name, region))
        if len(self.volumes) >= self.limits["volume_limit"]:
            raise Refused(403, "forbidden", "creating this volume would exceed your volume "
                          "limit of %d" % self.limits["volume_limit"])
        self._touch_tags(body.get("tags"))
        volume_id = self._new_id()
        self.volumes[volume_id] = {
            "id": volume_id, "region": self._region(region), "droplet_ids": [], "name": name,
            "description": body.get("description", ""), "size_gigabytes": size,
            "created_at": self._created_at(), "filesystem_type": body.get("filesystem_type", ""),
            "filesystem_label": "", "tags": list(body.get("tags") or [])}
        return 201, {"volume": self.volumes[volume_id]}

    @route("DELETE", "/v2/volumes/{id}")
    def delete_volume(self, _query, _body, volume_id):
        if self._get("volumes", volume_id)["droplet_ids"]:
            raise Refused(409, "conflict", "the volume is attached to a droplet; detach it first")
        del self.volumes[volume_id]
        return 204, None

    @route("POST", "/v2/volumes/{id}/actions")
    def volume_action(self, _query, body, volume_id):
        volume = self._get("volumes", volume_id)
        droplet = self.droplets.get(body.get("droplet_id"))
        if droplet is None:
            raise unprocessable("droplet_id: no such droplet")
        if body.get("type") == "attach":
            if volume["droplet_ids"]:
                raise unprocessable("the volume is already attached to a droplet")
            if droplet["status"] == "new" or droplet["region"] != volume["region"]:
                raise unprocessable("the droplet is not active in the volume's region")
            if len(droplet["volume_ids"]) >= VOLUMES_PER_DROPLET:
                raise unprocessable("a droplet holds at most %d volumes" % VOLUMES_PER_DROPLET)
            volume["droplet_ids"].append(droplet["id"])
            droplet["volume_ids"].append(volume_id)
        elif body.get("type") == "detach" and droplet["id"] in volume["droplet_ids"]:
            volume["droplet_ids"].remove(droplet["id"])
            droplet["volume_ids"].remove(volume_id)
        else:
            raise unprocessable("type must be attach, or detach from the droplet holding it")
        return 202, self._action(body["type"] + "_volume", "volume", volume["region"]["slug"])

    # ---- reserved IPs ---------------------------------------------------------------------

    @route("POST", "/v2/reserved_ips")
    def create_reserved_ip(self, _query, body):
        if len(self.reserved_ips) >= self.limits["reserved_ip_limit"]:
            raise unprocessable("creating this reserved IP would exceed your reserved IP limit")
        droplet = self._assignable(body["droplet_id"]) if "droplet_id" in body else None
        region = droplet["region"]["slug"] if droplet else body.get("region")
        if region not in REGIONS:
            raise unprocessable("droplet_id or a valid region is required")
        address = str(ipaddress.ip_address("198.19.0.0") + next(self._addresses))
        self.reserved_ips[address] = {"ip": address, "region": self._region(region),
                                      "droplet": droplet, "locked": False,
                                      "project_id": str(uuid.UUID(int=1))}
        links = {"droplets": [{"id": droplet["id"], "rel": "droplet"}] if droplet else [],
                 "actions": [{"id": next(self._ids), "rel": "assign_ip"}] if droplet else []}
        return 202, {"reserved_ip": self.reserved_ips[address], "links": links}

    def _assignable(self, droplet_id):
        droplet = self.droplets.get(droplet_id)
        if droplet is None:
            raise unprocessable("droplet_id: no such droplet")
        if droplet["status"] != "active":
            raise unprocessable("Droplet is currently in a pending event")
        if any((a["droplet"] or {}).get("id") == droplet_id for a in self.reserved_ips.values()):
            raise unprocessable("the droplet already has a reserved IP")
        return droplet

    @route("POST", "/v2/reserved_ips/{ip}/actions")
    def reserved_ip_action(self, _query, body, address):
        # The reference: assign moves an address that another droplet holds in the same
        # action (the failover it exists for); a droplet of another region is refused, and so
        # is a second action on an address whose first one is still in progress.
        reserved = self._get("reserved_ips", address)
        if self._busy("reserved_ip", address):
            raise unprocessable("the reserved IP has a pending event")
        if body.get("type") == "assign":
            droplet = self.droplets.get(body.get("droplet_id"))
            if droplet is not None and droplet["region"] != reserved["region"]:
                raise unprocessable("the droplet is in another region than the reserved IP")
            if (reserved["droplet"] or {}).get("id") != body.get("droplet_id"):
                droplet = self._assignable(body.get("droplet_id"))

            def apply():
                reserved["droplet"] = droplet if droplet["id"] in self.droplets else None
        elif body.get("type") == "unassign" and reserved["droplet"]:
            def apply():
                reserved["droplet"] = None
        else:
            raise unprocessable("type must be assign, or unassign for an assigned address")
        return 201, {"action": self._slow_action(body["type"] + "_ip", "reserved_ip", address,
                                                 reserved["region"]["slug"], apply)}

    @route("DELETE", "/v2/reserved_ips/{ip}")
    def delete_reserved_ip(self, _query, _body, address):
        # The reference: deleting a reserved IP unassigns it and removes it from the account.
        self._get("reserved_ips", address)
        del self.reserved_ips[address]
        return 204, None

    # ---- SSH keys, account, sizes, regions -------------------------------------------------

    def _ssh_key(self, ident):
        """A key by id or fingerprint (both are accepted wherever DigitalOcean takes a key)."""
        if isinstance(ident, int) or str(ident).isdigit():
            return self.ssh_keys.get(int(ident))
        return next((k for k in self.ssh_keys.values() if k["fingerprint"] == ident), None)

    @route("POST", "/v2/account/keys")
    def create_ssh_key(self, _query, body):
        name, public_key = body.get("name"), (body.get("public_key") or "").strip()
        if not isinstance(name, str) or not name.strip():
            raise unprocessable("Name can't be blank")
        if not SSH_KEY_RE.match(public_key):
            raise unprocessable("Key invalid, key should be of the format `type key [comment]`")
        try:
            print_ = fingerprint(public_key)
        except ValueError:
            raise unprocessable("Key invalid: not base64") from None
        if any(k["fingerprint"] == print_ for k in self.ssh_keys.values()):
            raise unprocessable("SSH Key is already in use on your account")
        key_id = next(self._key_ids)
        self.ssh_keys[key_id] = {"id": key_id, "name": name, "fingerprint": print_,
                                 "public_key": public_key}
        return 201, {"ssh_key": self.ssh_keys[key_id]}

    @route("GET", "/v2/account/keys/{id}")
    def get_ssh_key(self, _query, _body, ident):
        key = self._ssh_key(ident)
        if key is None:
            raise not_found()
        return 200, {"ssh_key": key}

    @route("DELETE", "/v2/account/keys/{id}")
    def delete_ssh_key(self, _query, _body, ident):
        key = self._ssh_key(ident)
        if key is None:
            raise not_found()
        del self.ssh_keys[key["id"]]
        return 204, None

    @route("GET", "/v2/account")
    def get_account(self, _query, _body):
        # The account object: droplet_limit and floating_ip_limit (reserved IPs) are the limits
        # it documents; the volume limit is not in it.
        return 200, {"account": {
            "droplet_limit": self.limits["droplet_limit"],
            "floating_ip_limit": self.limits["reserved_ip_limit"],
            "email": "sammy@example.com", "name": "Sammy", "uuid": "b6fr89dbf6d9156cace5f3c7",
            "email_verified": True, "status": "active", "status_message": "",
            "team": {"uuid": "5df3e3004a17e242b7c20ca6", "name": "My Team"}}}

    @route("GET", "/v2/sizes")
    def list_sizes(self, query, _body):
        sizes = []
        for slug, (memory, vcpus, disk) in sorted(SIZES.items()):
            sizes.append({"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk,
                          "transfer": 4.0, "price_monthly": 24.0, "price_hourly": 0.0357,
                          "regions": sorted(self.size_regions.get(slug, [])),
                          "available": bool(self.size_regions.get(slug)),
                          "description": "Basic"})
        return self._page("/v2/sizes", query, "sizes", sizes)

    @route("GET", "/v2/regions")
    def list_regions(self, query, _body):
        return self._page("/v2/regions", query, "regions",
                          [self._region(slug) for slug in REGIONS])

    # ---- firewalls ------------------------------------------------------------------------

    @route("POST", "/v2/firewalls")
    def create_firewall(self, _query, body):
        firewall = self._firewall(self._new_id(), body, self._created_at())
        self.firewalls[firewall["id"]] = firewall
        return 202, {"firewall": firewall}

    @route("PUT", "/v2/firewalls/{id}")
    def update_firewall(self, _query, body, firewall_id):
        created = self._get("firewalls", firewall_id)["created_at"]
        self.firewalls[firewall_id] = self._firewall(firewall_id, body, created)
        return 200, {"firewall": self.firewalls[firewall_id]}

    @route("DELETE", "/v2/firewalls/{id}")
    def delete_firewall(self, _query, _body, firewall_id):
        self._get("firewalls", firewall_id)
        del self.firewalls[firewall_id]
        return 204, None

    def _firewall(self, firewall_id, body, created):
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]*$", body.get("name") or ""):
            raise unprocessable("name must begin with an alphanumeric character and hold only "
                                "alphanumerics, '.' and '-'")
        inbound = [_rule(r, "sources") for r in body.get("inbound_rules") or []]
        outbound = [_rule(r, "destinations") for r in body.get("outbound_rules") or []]
        if not inbound + outbound or len(inbound + outbound) > MAX_RULES:
            raise unprocessable("a firewall needs between 1 and %d rules" % MAX_RULES)
        tags = list(body.get("tags") or [])
        if len(tags) > MAX_FIREWALL_TAGS:
            raise unprocessable("a firewall applies to %d tags at most" % MAX_FIREWALL_TAGS)
        named = tags + [t for r in inbound for t in r["sources"].get("tags", [])]
        named += [t for r in outbound for t in r["destinations"].get("tags", [])]
        # DigitalOcean takes "existing tags" only (doctl's firewall help; poseidon/typhoon#709:
        # a firewall created before its tag fails): a tag is made by POST /v2/tags or by the
        # first droplet or volume created with it.
        for tag in named:
            if tag not in self.tags:
                raise unprocessable("tag %r does not exist" % tag)
        return {"id": firewall_id, "name": body["name"], "status": "succeeded",
                "created_at": created, "pending_changes": [], "inbound_rules": inbound,
                "outbound_rules": outbound, "droplet_ids": list(body.get("droplet_ids") or []),
                "tags": tags}


def _lister(path, collection, filters=()):
    def handler(fake, query, _body):
        items = [item for item in getattr(fake, collection).values()
                 if all(FILTERS[f](item, query[f]) for f in filters if f in query)]
        return fake._page(path, query, collection, items)  # pylint: disable=protected-access
    return handler


def _getter(collection, key):
    def handler(fake, _query, _body, ident):
        return 200, {key: fake._get(collection, ident)}  # pylint: disable=protected-access
    return handler


for _path, _collection, _filters in (
        ("/v2/account/keys", "ssh_keys", ()), ("/v2/tags", "tags", ()), ("/v2/vpcs", "vpcs", ()),
        ("/v2/droplets", "droplets", ("tag_name", "name")), ("/v2/firewalls", "firewalls", ()),
        ("/v2/volumes", "volumes", ("name", "region")), ("/v2/reserved_ips", "reserved_ips", ())):
    route("GET", _path)(_lister(_path, _collection, _filters))
    if _collection != "ssh_keys":
        _key = _collection[:-1]
        route("GET", "%s/{%s}" % (_path, "ip" if _key == "reserved_ip" else "id"))(
            _getter(_collection, _key))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # a keep-alive reply in two writes would wait 40 ms
    owner = None

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, data, headers = self.owner.handle(self.command, self.path, self.headers, raw)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args):   # pylint: disable=arguments-differ
        """Quiet: FakeDigitalOcean.requests is the log."""
