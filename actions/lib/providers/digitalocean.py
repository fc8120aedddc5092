"""DigitalOcean driver: droplets, block storage volumes, reserved IPs, cloud firewalls, a VPC.

What belongs to a deployment is found on every run, never remembered:
- droplets and volumes by tag: dialog:<deployment>, dialog:<deployment>:group:<group> and
  dialog:<deployment>:role:<role> (DigitalOcean tag names allow letters, digits, '-', '_', ':');
- reserved IPs through the droplets they are assigned to (reserved IPs cannot be tagged, so
  they are only ever created already assigned, and deleted while still assigned);
- firewalls by name (<deployment>-<role>, <deployment>-hosts) and the tags they apply to;
- the VPC by name (dialog-<deployment>) and the marker in its description.

All calls go through the official pydo client. Its azure-core pipeline gets three policies of
ours: one records each logical call in the CallLog and turns error statuses into ApiError, one
retries (429 for every method, 5xx only for idempotent ones, waiting for the rate-limit reset),
one adds the bearer token.
"""

import ipaddress
import re
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import pydo
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import HTTPPolicy, SansIOHTTPPolicy

from lib.cloud import object_storage
from lib.cloud.login_users import DIGITALOCEAN_USER
from lib.cloud.volume_devices import digitalocean_device
from lib.errors import CredentialsError, InputError, ProviderError, QuotaError, ResourceFailed
from lib.providers import base

DEFAULT_ENDPOINT = "https://api.digitalocean.com"
DEFAULT_IMAGE = "debian-12-x64"
BATCH_SIZE = 10        # POST /v2/droplets creates at most ten droplets per request
PAGE_SIZE = 200        # the largest page the API serves
PUBLIC_CIDRS = ["0.0.0.0/0", "::/0"]
OUTBOUND_OPEN = [
    {"protocol": "tcp", "ports": "0", "destinations": {"addresses": PUBLIC_CIDRS}},
    {"protocol": "udp", "ports": "0", "destinations": {"addresses": PUBLIC_CIDRS}},
    {"protocol": "icmp", "destinations": {"addresses": PUBLIC_CIDRS}},
]
VPC_MARKER = "managed by stackstorm-dialog for deployment %s"
IDEMPOTENT = frozenset(["GET", "HEAD", "PUT", "DELETE"])
LOOPBACK = ("127.0.0.1", "::1", "localhost")
FAILED_STATES = ("archive",)
QUOTA_WORDS = re.compile(r"exceed|(droplet|volume|ip) limit|limit (reached|exceeded)")


def deployment_tag(deployment):
    return "dialog:%s" % deployment


def group_tag(deployment, group):
    return "dialog:%s:group:%s" % (deployment, group)


def role_tag(deployment, role):
    return "dialog:%s:role:%s" % (deployment, role)


def firewall_name(deployment, role):
    return "%s-%s" % (deployment, "hosts" if role == "*" else role)


def vpc_name(deployment):
    return "dialog-%s" % deployment


def volume_name(host, disk):
    return "%s-%s" % (host["name"], disk["purpose"])


def operation_name(method, url):
    """'DELETE /v2/droplets/{id}': the path with identifiers (ids, UUIDs, IPs, tags) elided."""
    parts = [("{id}" if any(c.isdigit() or c in ":%" for c in p) and i > 1 else p)
             for i, p in enumerate(urlsplit(url).path.split("/"))]
    return "%s %s" % (method, "/".join(parts))


class ApiError(Exception):
    """A DigitalOcean API request answered with an error status (after retries)."""

    def __init__(self, status, operation, message):
        super().__init__("%s: HTTP %d: %s" % (operation, status, message))
        self.status = status
        self.operation = operation
        self.message = message


def _error_message(http_response):
    try:
        body = http_response.json()
        return str(body.get("message") or body.get("id") or "")[:300]
    except Exception:  # pylint: disable=broad-except  # an HTML error page, say
        return http_response.reason or ""


class _CallRecorder(HTTPPolicy):
    """Outermost policy: one CallLog entry per logical call that succeeded; errors raise.

    pydo treats some error statuses (404 on get, 400 on volume create...) as data; raising here
    gives every operation the same behaviour.
    """

    def __init__(self, record):
        super().__init__()
        self._record = record

    def send(self, request):
        response = self.next.send(request)
        http = response.http_response
        method = request.http_request.method.upper()
        operation = operation_name(method, request.http_request.url)
        if http.status_code >= 400:
            raise ApiError(http.status_code, operation, _error_message(http))
        self._record(operation, method != "GET")
        return response


class _RateLimitRetry(HTTPPolicy):
    """Replaces azure-core's RetryPolicy, which would also repeat a POST after a 5xx.

    429: the request was not applied, so any method is repeated after sleeping until the reset
    the API announces (ratelimit-reset, epoch seconds; retry-after if given), at most max_wait
    seconds per wait. 5xx and lost responses: repeated only for idempotent methods, since a
    create may have been applied. attempts bounds the retries of one call.
    """

    def __init__(self, sleep, clock, attempts=8, max_wait=60.0, backoff=1.0):
        super().__init__()
        self.sleep, self.clock = sleep, clock
        self.attempts, self.max_wait, self.backoff = attempts, max_wait, backoff

    def send(self, request):
        method = request.http_request.method.upper()
        attempt = 0
        while True:
            try:
                response = self.next.send(request)
            except ServiceRequestError:
                # The request never reached the API: repeating it cannot duplicate anything.
                if attempt >= self.attempts:
                    raise
                response = None
            except ServiceResponseError:
                if attempt >= self.attempts or method not in IDEMPOTENT:
                    raise
                response = None
            if response is not None:
                status = response.http_response.status_code
                if attempt >= self.attempts or not self.retryable(method, status):
                    return response
            self.sleep(self.delay(response, attempt))
            attempt += 1

    @staticmethod
    def retryable(method, status):
        return status == 429 or (status >= 500 and method in IDEMPOTENT)

    def delay(self, response, attempt):
        backoff = min(self.backoff * 2 ** attempt, self.max_wait)
        if response is None or response.http_response.status_code != 429:
            return backoff
        wait = rate_limit_wait(response.http_response.headers, self.clock())
        return min(backoff if wait is None else wait, self.max_wait)


def rate_limit_wait(headers, now):
    """Seconds until the API accepts requests again, from a 429's headers (None: not said)."""
    waits = []
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            waits.append(float(reset) - now)
        except ValueError:
            pass
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            waits.append(float(retry_after))
        except ValueError:
            try:
                waits.append(parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                pass
    return max(0.0, max(waits)) if waits else None


class _BearerToken(SansIOHTTPPolicy):
    """azure-core's BearerTokenCredentialPolicy refuses plain HTTP outright; the driver checks
    the endpoint once instead (HTTPS, or loopback for a local fake) and this adds the header."""

    def __init__(self, token):
        super().__init__()
        self._token = token

    def on_request(self, request):
        request.http_request.headers["Authorization"] = "Bearer %s" % self._token


class Driver(base.Driver):
    """Reconciles a DigitalOcean account to a plan.

    Keyword arguments beyond base.Driver's, for tests and impatient callers: poll_interval and
    droplet_timeout (seconds) bound the waits on droplet state; sleep and clock replace
    time.sleep and time.time everywhere (waits and rate-limit resets); retry_attempts and
    max_wait bound the retries of one API call.
    """

    name = "digitalocean"

    def __init__(self, profile, region, calls=None, progress=None, poll_interval=5.0,
                 droplet_timeout=900.0, sleep=time.sleep, clock=time.time, retry_attempts=8,
                 max_wait=60.0):
        super().__init__(profile, region, calls=calls, progress=progress)
        self.poll_interval = poll_interval
        self.droplet_timeout = droplet_timeout
        self.sleep = sleep
        self.clock = clock
        self.retry_attempts = retry_attempts
        self.max_wait = max_wait
        self._who = "profile '%s' (digitalocean)" % (profile.get("name") or "default")
        self._api = None
        self.kept = []      # what the last destroy left in place on purpose (the files bucket)

    # ---- the three operations -------------------------------------------------------------

    def inventory(self, deployment):
        state = self._read(deployment, networks=False)
        hosts = [self._host(deployment, droplet, state)
                 for droplet in state["droplets"].values()]
        return sorted(hosts, key=lambda host: host["name"])

    def reconcile(self, plan, dry_run=False):
        if plan.get("provider") != "digitalocean":
            raise ProviderError("%s: the plan is for provider %r"
                                % (self._who, plan.get("provider")))
        self._require_ssh_keys()
        deployment = plan["deployment"]
        self.progress("reading deployment '%s' on DigitalOcean" % deployment)
        # First: missing Spaces keys stop the run before any droplet exists.
        bucket = self._files_bucket(deployment) \
            if object_storage.needs_shared_files(plan) else None
        state = self._read(deployment)
        changes = self._remove_surplus(plan, state, dry_run)
        if bucket:
            changes += bucket.ensure(dry_run)
        vpc_id = self._ensure_vpc(plan, state, changes, dry_run)
        # Firewalls before droplets: they apply by tag, so a droplet is covered from the moment
        # it exists (droplets first would leave every port open until the firewalls came).
        changes += self._ensure_firewalls(plan, state, dry_run)
        changes += self._ensure_droplets(plan, state, vpc_id, dry_run)
        changes += self._ensure_volumes(plan, state, dry_run)
        changes += self._ensure_reserved_ips(plan, state, dry_run)
        return changes

    def _require_ssh_keys(self):
        """A droplet created without SSH keys gets a root password by email and password
        logins over SSH (DigitalOcean's documented behaviour): refused before any call."""
        names = self.profile.get("ssh_key_names")
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n for n in names):
            raise InputError("ssh_key_names", "profile %r: give the names of the SSH keys "
                             "registered with DigitalOcean that droplets get for root (without "
                             "one, DigitalOcean enables root password logins)"
                             % (self.profile.get("name") or "default"))

    def destroy(self, deployment, dry_run=False, delete_data=False):
        self.progress("reading deployment '%s' on DigitalOcean" % deployment)
        bucket = self._files_bucket(deployment, required=False)
        gone, self.kept = bucket.destroy(delete_data, dry_run) if bucket else ([], [])
        state = self._read(deployment)
        droplets = sorted(list(state["droplets"].values()) + state["duplicates"],
                          key=lambda d: (d["name"], d["id"]))
        changes = [base.change("delete", "reserved_ip", ip["ip"],
                               "held by %s" % ip["droplet"]["name"])
                   for ip in state["reserved_ips"]]
        changes += gone
        changes += [base.change("delete", "droplet", d["name"]) for d in droplets]
        changes += [base.change("delete", "volume", name) for name in sorted(state["volumes"])]
        changes += [base.change("delete", "firewall", name)
                    for name in sorted(state["firewalls"])]
        vpc = self._own_vpc(deployment, state)
        if vpc:
            changes.append(base.change("delete", "vpc", vpc["name"]))
        tags = self._own_tags(deployment)
        changes += [base.change("delete", "tag", tag) for tag in tags]
        if dry_run:
            return changes
        self._delete_reserved_ips(state["reserved_ips"])
        if droplets:
            self.progress("destroying %d droplets" % len(droplets))
            self._call("destroying the droplets of deployment %s" % deployment,
                       self.api.droplets.destroy_by_tag, tag_name=deployment_tag(deployment))
            self._wait_gone(deployment, [d["id"] for d in droplets])
        self._delete_volumes(deployment, state["volumes"])
        for name, firewall in sorted(state["firewalls"].items()):
            self.progress("deleting firewall %s" % name)
            self._call("deleting firewall %s" % name, self.api.firewalls.delete,
                       firewall_id=firewall["id"], missing_ok=True)
        if vpc:
            self._delete_vpc(vpc)
        for tag in tags:
            self._call("deleting tag %s" % tag, self.api.tags.delete, tag_id=tag,
                       missing_ok=True)
        return changes

    # ---- shared files (lib.cloud.object_storage) --------------------------------------------

    def _files_bucket(self, deployment, required=True):
        """The deployment's Spaces bucket (None with the operator's object_storage, or when
        not required and the profile has no Spaces keys)."""
        if not required and not self.profile.get("spaces_access_key_id"):
            return None
        account = self._call("reading the account", self.api.account.get)["account"]["uuid"]
        return object_storage.spaces_bucket(self.profile, self.region, deployment, account,
                                            calls=self.calls, where=self._who)

    def object_storage_settings(self, deployment):
        """Where the dialog servers keep uploaded files (keys included: render puts them in
        secret files only)."""
        given = object_storage.operator_storage(self.profile)
        if given:
            return dict(given, path_style=bool(given.get("path_style", True)))
        return object_storage.spaces_settings(self.profile, self.region,
                                              self._files_bucket(deployment))

    # ---- the API client -------------------------------------------------------------------

    @property
    def api(self):
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self):
        token = self.profile.get("digitalocean_token")
        if not token:
            raise CredentialsError("%s: the profile has no digitalocean_token" % self._who)
        endpoint = (self.profile.get("endpoint_url") or DEFAULT_ENDPOINT).rstrip("/")
        if endpoint.endswith("/v2"):
            endpoint = endpoint[:-3]
        parts = urlsplit(endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and parts.hostname in LOOPBACK):
            raise ProviderError("%s: endpoint_url %s must be an https URL (the token would "
                                "travel in clear)" % (self._who, endpoint))
        return pydo.Client(
            token, endpoint=endpoint,
            per_call_policies=[_CallRecorder(lambda op, mutating: self.calls.record(op, mutating))],
            retry_policy=_RateLimitRetry(self.sleep, self.clock, attempts=self.retry_attempts,
                                         max_wait=self.max_wait),
            authentication_policy=_BearerToken(token),
            connection_timeout=30, read_timeout=120)

    def _call(self, what, operation, *args, missing_ok=False, **kwargs):
        """One API call; failures become the pack's errors, worded for a person. missing_ok:
        a 404 means done (a delete repeated after a lost response, say) and returns None."""
        try:
            return operation(*args, **kwargs)
        except ApiError as err:
            if missing_ok and err.status == 404:
                return None
            raise self._translate(err, what) from None
        except AzureError as err:
            raise self._unreachable(err, what) from None

    def _unreachable(self, err, what):
        text = (str(err) or type(err).__name__).splitlines()[0][:200]
        return ProviderError("%s: %s failed: %s" % (self._who, what, text))

    def _translate(self, err, what):
        if err.status == 401:
            return CredentialsError("%s: the token was refused" % self._who)
        if err.status in (403, 422) and QUOTA_WORDS.search(err.message.lower()):
            return QuotaError("%s: %s exceeds the account's limits; DigitalOcean said: %s "
                              "(ask DigitalOcean support to raise the limit, or plan fewer "
                              "resources)" % (self._who, what, err.message))
        if err.status == 429:
            return ProviderError("%s: %s: still rate limited after %d retries; try again "
                                 "later" % (self._who, what, self.retry_attempts))
        return ProviderError("%s: %s failed (HTTP %d): %s" % (self._who, what, err.status,
                                                              err.message))

    def _list(self, what, operation, key, **params):
        """Every item of a paginated listing."""
        items, page = [], 1
        while True:
            body = self._call(what, operation, per_page=PAGE_SIZE, page=page, **params)
            items.extend(body.get(key) or [])
            if not ((body.get("links") or {}).get("pages") or {}).get("next"):
                return items
            page += 1

    def _wait(self, check, timeout, what):
        """Poll check() until it returns a true value; ResourceFailed after timeout seconds."""
        try:
            return base.wait_until(check, timeout, self.poll_interval, what, clock=self.clock,
                                   sleep=self.sleep)
        except TimeoutError as exc:
            raise ResourceFailed("%s: %s" % (self._who, exc)) from None

    # ---- reading what exists --------------------------------------------------------------

    def _read(self, deployment, networks=True):
        """What the deployment has; firewalls and VPCs only with networks."""
        listed = self._listed_droplets(deployment)
        droplets = _by_name(listed)
        ids = {d["id"] for d in listed}
        reserved = [ip for ip in self._list("listing reserved IPs", self.api.reserved_ips.list,
                                            "reserved_ips")
                    if (ip.get("droplet") or {}).get("id") in ids]
        state = {"droplets": droplets, "volumes": self._volumes(deployment),
                 "duplicates": [d for d in listed if droplets[d["name"]] is not d],
                 "reserved_ips": reserved, "firewalls": {}, "vpcs": []}
        if networks:
            state["firewalls"] = self._firewalls(deployment)
            state["vpcs"] = self._list("listing VPCs", self.api.vpcs.list, "vpcs")
        return state

    def _listed_droplets(self, deployment):
        return self._list("listing droplets", self.api.droplets.list, "droplets",
                          tag_name=deployment_tag(deployment))

    def _volumes(self, deployment):
        # GET /v2/volumes filters by name and region only: the tag is checked here.
        tag = deployment_tag(deployment)
        return {v["name"]: v for v in self._list("listing volumes", self.api.volumes.list,
                                                 "volumes")
                if tag in (v.get("tags") or [])}

    def _firewalls(self, deployment):
        """Firewalls named for the deployment and applied only to its tags."""
        tag = deployment_tag(deployment)
        own = {}
        for firewall in self._list("listing firewalls", self.api.firewalls.list, "firewalls"):
            tags = firewall.get("tags") or []
            if firewall["name"].startswith(deployment + "-") and tags and all(
                    t == tag or t.startswith(tag + ":") for t in tags):
                own[firewall["name"]] = firewall
        return own

    def _own_vpc(self, deployment, state):
        if self.profile.get("vpc_id"):
            return None
        for vpc in state["vpcs"]:
            if vpc["name"] == vpc_name(deployment) and \
                    vpc.get("description") == VPC_MARKER % deployment:
                return vpc
        return None

    def _own_tags(self, deployment):
        tag = deployment_tag(deployment)
        return sorted(t["name"] for t in self._list("listing tags", self.api.tags.list, "tags")
                      if t["name"] == tag or t["name"].startswith(tag + ":"))

    def _host(self, deployment, droplet, state):
        tags = droplet.get("tags") or []
        group_prefix = group_tag(deployment, "")
        role_prefix = role_tag(deployment, "")
        suffix = droplet["name"].rsplit("-", 1)[-1]
        networks = (droplet.get("networks") or {}).get("v4") or []
        public = [n["ip_address"] for n in networks if n["type"] == "public"]
        private = [n["ip_address"] for n in networks if n["type"] == "private"]
        reserved = [ip["ip"] for ip in state["reserved_ips"]
                    if ip["droplet"]["id"] == droplet["id"]]
        volumes = [{"id": v["id"], "size_gb": v["size_gigabytes"], "kind": "ssd",
                    "purpose": v["name"][len(droplet["name"]) + 1:],
                    "device": digitalocean_device(v["name"])}
                   for name, v in sorted(state["volumes"].items())
                   if droplet["id"] in (v.get("droplet_ids") or [])]
        return {
            "name": droplet["name"],
            "group": next((t[len(group_prefix):] for t in tags if t.startswith(group_prefix)),
                          None),
            "index": int(suffix) if suffix.isdigit() else None,
            "roles": [t[len(role_prefix):] for t in tags if t.startswith(role_prefix)],
            "provider_id": str(droplet["id"]),
            "size": droplet.get("size_slug"),
            "state": droplet["status"],
            "private_address": private[0] if private else None,
            "public_addresses": public + reserved,
            "volumes": volumes,
            "login_user": DIGITALOCEAN_USER,    # droplets let root in (lib.hosts.ssh_path)
        }

    # ---- failover primitives --------------------------------------------------------------

    ACTION_TIMEOUT = 300.0      # a reserved IP assign or a power_off: seconds, usually

    def floating_addresses(self, deployment, known=()):
        """Reserved IPs cannot be tagged: a floating one is one held by a droplet of a group
        that shares an address (every reserved IP of such a group is its floating one: the
        planner gives those hosts no address of their own), or an unassigned one in `known`
        (the addresses the deployment's record saw on the lost host)."""
        state = self._read(deployment, networks=False)
        hosts = {str(d["id"]): self._host(deployment, d, state)
                 for d in state["droplets"].values()}
        entries = []
        for ip in state["reserved_ips"]:
            holder = hosts.get(str(ip["droplet"]["id"]))
            if holder and holder["group"]:
                entries.append({"address": ip["ip"], "name": ip["ip"], "group": holder["group"],
                                "holder": holder["name"], "id": ip["ip"]})
        if known:
            for ip in self._list("listing reserved IPs", self.api.reserved_ips.list,
                                 "reserved_ips"):
                if ip["ip"] in known and not ip.get("droplet") and \
                        (ip.get("region") or {}).get("slug") == self.region:
                    entries.append({"address": ip["ip"], "name": ip["ip"], "group": None,
                                    "holder": None, "id": ip["ip"], "known": True})
        return entries

    def assign_floating(self, deployment, entry, host):
        """POST /v2/reserved_ips/{ip}/actions {type: assign}: DigitalOcean moves an assigned
        address in that one action; it answers with an action object, in-progress until the
        move is done, which is polled until completed."""
        reply = self._call("assigning %s to %s" % (entry["address"], host["name"]),
                           self.api.reserved_ips_actions.post, reserved_ip=entry["address"],
                           body={"type": "assign", "droplet_id": int(host["provider_id"])})
        self.progress("assigning %s to %s" % (entry["address"], host["name"]))
        self._wait_action(reply["action"],
                          "assigning %s to %s" % (entry["address"], host["name"]))

    def _wait_action(self, action, what):
        def check():
            now = self._call("reading action %s" % action["id"], self.api.actions.get,
                             action_id=action["id"])["action"]
            if now["status"] == "errored":
                raise ResourceFailed("%s: %s failed (action %s errored)"
                                     % (self._who, what, action["id"]))
            return now["status"] == "completed"
        if action.get("status") != "completed":
            self._wait(check, self.ACTION_TIMEOUT, what)

    def fence(self, deployment, host):
        """A power_off action (a hard power cut, as pulling the plug: no shutdown that could
        hang), waited for until the droplet is off. The droplet, its volumes and addresses
        stay."""
        droplet = self._listed(deployment, host)
        if droplet is None:
            return {"host": host, "method": "already gone (no droplet)", "instance": None}
        if droplet["status"] != "off":
            self.progress("powering off %s (droplet %s)" % (host, droplet["id"]))
            reply = self._call("powering off %s" % host, self.api.droplet_actions.post,
                               droplet_id=droplet["id"], body={"type": "power_off"})
            self._wait_action(reply["action"], "powering off %s" % host)

            def off():
                return (self._listed(deployment, host) or {"status": "off"})["status"] == "off"
            self._wait(off, self.droplet_timeout, "%s to be off" % host)
        return {"host": host, "method": "power_off action, now off",
                "instance": str(droplet["id"])}

    def _listed(self, deployment, host):
        return _by_name(self._listed_droplets(deployment)).get(host)

    def retire(self, deployment, host):
        raise ProviderError(
            "%s: retiring a host is not done on DigitalOcean: volumes are matched to hosts by "
            "name and DigitalOcean cannot rename a volume, so the replacement would get the "
            "old data back. Destroy the droplet by hand (its volumes detach and stay), rename "
            "nothing, and decide about the volumes before the next deploy" % self._who)

    # ---- reconcile: surplus ---------------------------------------------------------------

    def _remove_surplus(self, plan, state, dry_run):
        """Droplets the plan no longer has (scale down), with their reserved IPs and volumes,
        and volumes of the deployment that no planned disk accounts for."""
        planned = {host["name"] for host in plan["hosts"]}
        surplus = sorted((d for name, d in state["droplets"].items() if name not in planned),
                         key=lambda d: d["name"])
        roles = role_tag(plan["deployment"], "")
        base.check_deletions(plan, [(d["name"], [t[len(roles):] for t in d.get("tags") or []
                                                 if t.startswith(roles)]) for d in surplus])
        ids = {d["id"] for d in surplus + state["duplicates"]}
        addresses = [ip for ip in state["reserved_ips"] if ip["droplet"]["id"] in ids]
        wanted_volumes = {volume_name(host, disk) for host in plan["hosts"]
                          for disk in host["disks"] if disk["source"] == "volume"}
        volumes = {name: v for name, v in state["volumes"].items() if name not in wanted_volumes}
        changes = [base.change("delete", "reserved_ip", ip["ip"],
                               "held by %s" % ip["droplet"]["name"]) for ip in addresses]
        changes += [base.change("delete", "droplet", d["name"], "not in the plan")
                    for d in surplus]
        changes += [base.change("delete", "droplet", d["name"], "a second droplet of that "
                                "name (id %s); the oldest is kept" % d["id"])
                    for d in state["duplicates"]]
        changes += [base.change("delete", "volume", name, "no planned disk")
                    for name in sorted(volumes)]
        if dry_run or not changes:
            return changes
        self._delete_reserved_ips(addresses)
        for droplet in surplus + state["duplicates"]:
            self.progress("destroying droplet %s" % droplet["name"])
            self._call("destroying droplet %s" % droplet["name"], self.api.droplets.destroy,
                       droplet_id=droplet["id"], missing_ok=True)
        if ids:
            self._wait_gone(plan["deployment"], ids)
        self._delete_volumes(plan["deployment"], volumes)
        state["droplets"] = {n: d for n, d in state["droplets"].items() if d["id"] not in ids}
        state["reserved_ips"] = [ip for ip in state["reserved_ips"] if ip not in addresses]
        for name in volumes:
            del state["volumes"][name]
        return changes

    def _delete_reserved_ips(self, addresses):
        # Deleting an assigned reserved IP unassigns it in the same request: no moment exists
        # where an unassigned (untraceable) address could be left behind.
        for ip in addresses:
            self.progress("deleting reserved IP %s" % ip["ip"])
            self._call("deleting reserved IP %s" % ip["ip"], self.api.reserved_ips.delete,
                       reserved_ip=ip["ip"], missing_ok=True)

    def _wait_gone(self, deployment, ids):
        ids = set(ids)
        self._wait(lambda: not ids & {d["id"] for d in self._listed_droplets(deployment)},
                   self.droplet_timeout, "%d droplets to be destroyed" % len(ids))

    def _delete_volumes(self, deployment, volumes):
        """Delete volumes, detaching first any still attached (to a droplet kept)."""
        if not volumes:
            return
        current = self._volumes(deployment)
        for name in sorted(volumes):
            volume = current.get(name)
            if volume is None:
                continue
            for droplet_id in volume.get("droplet_ids") or []:
                self._call("detaching volume %s" % name, self.api.volume_actions.post_by_id,
                           volume_id=volume["id"],
                           body={"type": "detach", "droplet_id": droplet_id,
                                 "region": volume["region"]["slug"]})
            self.progress("deleting volume %s" % name)
            self._call("deleting volume %s" % name, self.api.volumes.delete,
                       volume_id=volume["id"], missing_ok=True)

    def _delete_vpc(self, vpc):
        what = "deleting VPC %s" % vpc["name"]
        self.progress(what)

        def attempt():
            try:
                self.api.vpcs.delete(vpc_id=vpc["id"])
            except ApiError as err:
                if err.status == 404:
                    return True
                # Destroyed droplets can count as members for a short while.
                if err.status in (403, 409) and "member" in err.message.lower():
                    return False
                raise self._translate(err, what) from None
            except AzureError as err:
                raise self._unreachable(err, what) from None
            return True

        self._wait(attempt, self.droplet_timeout, "VPC %s to have no members" % vpc["name"])

    # ---- reconcile: network and droplets --------------------------------------------------

    def _ensure_vpc(self, plan, state, changes, dry_run):
        """The VPC id droplets go into: the profile's, else the deployment's own."""
        given = self.profile.get("vpc_id")
        if given:
            vpc = self._call("reading VPC %s (the profile's vpc_id)" % given,
                             self.api.vpcs.get, vpc_id=given)["vpc"]
            if vpc["region"] != plan["region"]:
                raise ProviderError("%s: VPC %s is in region %s, the plan is for %s"
                                    % (self._who, given, vpc["region"], plan["region"]))
            return given
        name = vpc_name(plan["deployment"])
        for vpc in state["vpcs"]:
            if vpc["name"] == name:
                if vpc["region"] != plan["region"]:
                    raise ProviderError("%s: VPC %s already exists in region %s, the plan is "
                                        "for %s" % (self._who, name, vpc["region"],
                                                    plan["region"]))
                return vpc["id"]
        changes.append(base.change("create", "vpc", name, "region %s" % plan["region"]))
        if dry_run:
            return None
        self.progress("creating VPC %s" % name)
        body = {"name": name, "region": plan["region"],
                "description": VPC_MARKER % plan["deployment"]}
        vpc = self._call("creating VPC %s" % name, self.api.vpcs.create, body=body)["vpc"]
        state["vpcs"].append(vpc)
        return vpc["id"]

    def _ensure_droplets(self, plan, state, vpc_id, dry_run):
        changes, created = [], []
        ssh_keys = None
        for group, hosts in _groups(plan["hosts"]):
            for host in hosts:
                existing = state["droplets"].get(host["name"])
                if existing and existing.get("size_slug") != host["size"]:
                    changes.append(base.change(
                        "update", "droplet", host["name"],
                        "size is %s, the plan says %s; resize it yourself (not automated, it "
                        "needs a power-off)" % (existing.get("size_slug"), host["size"])))
            missing = [h for h in hosts if h["name"] not in state["droplets"]]
            changes += [base.change("create", "droplet", h["name"],
                                    "%s in %s" % (h["size"], plan["region"])) for h in missing]
            if dry_run or not missing:
                continue
            if ssh_keys is None:
                ssh_keys = self._ssh_keys()
            for start in range(0, len(missing), BATCH_SIZE):
                batch = missing[start:start + BATCH_SIZE]
                created += self._create_droplets(plan, group, batch, vpc_id, ssh_keys)
        unsettled = [d["name"] for d in state["droplets"].values()
                     if d["status"] == "new" or d["status"] in FAILED_STATES]
        if not dry_run and (created or unsettled):
            self.progress("waiting for %d droplets to become active"
                          % (len(created) + len(unsettled)))
            state["droplets"] = self._wait_active(plan["deployment"],
                                                  [h["name"] for h in plan["hosts"]])
        return changes

    def _ssh_keys(self):
        names = self.profile.get("ssh_key_names") or []
        if not names:
            return []
        listed = self._list("listing SSH keys", self.api.ssh_keys.list, "ssh_keys")
        keys = {k["name"]: k["id"] for k in listed}
        missing = [n for n in names if n not in keys]
        if missing:
            raise ProviderError("%s: no SSH key named %s is registered with the account "
                                "(ssh_key_names); registered: %s"
                                % (self._who, ", ".join(repr(n) for n in missing),
                                   ", ".join(sorted(keys)) or "none"))
        return [keys[n] for n in names]

    def _create_droplets(self, plan, group, hosts, vpc_id, ssh_keys):
        deployment = plan["deployment"]
        first = hosts[0]
        tags = [deployment_tag(deployment), group_tag(deployment, group)]
        tags += [role_tag(deployment, role) for role in first["roles"]]
        body = {"names": [h["name"] for h in hosts], "region": plan["region"],
                "size": first["size"], "image": self.profile.get("image") or DEFAULT_IMAGE,
                "ssh_keys": ssh_keys, "tags": tags}
        if vpc_id:
            body["vpc_uuid"] = vpc_id
        names = ", ".join(body["names"])
        self.progress("creating droplets %s (%s)" % (names, first["size"]))
        what = "creating %d droplet(s) %s of size '%s' in region '%s' from image '%s'" % (
            len(hosts), names, first["size"], plan["region"], body["image"])
        # The response's actions are not waited on: the droplets' own status is (by tag).
        return self._call(what, self.api.droplets.create, body=body).get("droplets") or []

    def _wait_active(self, deployment, names):
        def check():
            droplets = _by_name(self._listed_droplets(deployment))
            for name in names:
                status = droplets[name]["status"] if name in droplets else "new"
                if status in FAILED_STATES:
                    raise ResourceFailed("%s: droplet %s ended in state '%s'; destroy it and "
                                         "run again" % (self._who, name, status))
            ready = all(name in droplets and droplets[name]["status"] != "new" for name in names)
            return droplets if ready else None

        return self._wait(check, self.droplet_timeout, "droplets to become active")

    # ---- reconcile: volumes, addresses, firewalls -----------------------------------------

    def _ensure_volumes(self, plan, state, dry_run):
        changes, attached = [], []
        for host in plan["hosts"]:
            for disk in (d for d in host["disks"] if d["source"] == "volume"):
                name = volume_name(host, disk)
                change, action = self._volume_change(host, disk, name, state)
                if change:
                    changes.append(change)
                if change and not dry_run and action:
                    attached.append(action(plan, host, disk, name, state))
        if attached:
            self._wait(lambda: self._attached(plan["deployment"], attached),
                       self.droplet_timeout, "volumes to be attached")
        return changes

    def _volume_change(self, host, disk, name, state):
        """(change, what to do) for one planned volume."""
        volume = state["volumes"].get(name)
        droplet = state["droplets"].get(host["name"])
        if volume is None:
            return base.change("create", "volume", name, "%d GB, attached to %s"
                               % (disk["size_gb"], host["name"])), self._create_volume
        holders = volume.get("droplet_ids") or []
        if droplet and droplet["id"] in holders:
            if volume["size_gigabytes"] != disk["size_gb"]:
                return base.change("update", "volume", name, "size is %d GB, the plan says %d "
                                   "GB; resize it yourself (not automated)"
                                   % (volume["size_gigabytes"], disk["size_gb"])), None
            return None, None
        if holders:
            raise ProviderError("%s: volume %s is attached to another droplet (id %s) than %s"
                                % (self._who, name, holders[0], host["name"]))
        return base.change("update", "volume", name, "attach to %s" % host["name"]), \
            self._attach_volume

    def _create_volume(self, plan, host, disk, name, state):
        deployment = plan["deployment"]
        body = {"name": name, "size_gigabytes": disk["size_gb"], "region": plan["region"],
                "description": "%s disk of %s" % (disk["purpose"], host["name"]),
                "tags": [deployment_tag(deployment), group_tag(deployment, host["group"])]}
        self.progress("creating volume %s (%d GB)" % (name, disk["size_gb"]))
        state["volumes"][name] = self._call("creating volume %s of %d GB in region '%s'"
                                            % (name, disk["size_gb"], plan["region"]),
                                            self.api.volumes.create, body=body)["volume"]
        return self._attach_volume(plan, host, disk, name, state)

    def _attach_volume(self, plan, host, disk, name, state):
        volume = state["volumes"][name]
        droplet = state["droplets"][host["name"]]
        self.progress("attaching volume %s to %s" % (name, host["name"]))
        self._call("attaching volume %s to %s" % (name, host["name"]),
                   self.api.volume_actions.post_by_id, volume_id=volume["id"],
                   body={"type": "attach", "droplet_id": droplet["id"],
                         "region": plan["region"]})
        return name, droplet["id"]

    def _attached(self, deployment, pairs):
        volumes = self._volumes(deployment)
        return all(droplet_id in (volumes.get(name, {}).get("droplet_ids") or [])
                   for name, droplet_id in pairs)

    def _ensure_reserved_ips(self, plan, state, dry_run):
        held = {ip["droplet"]["id"] for ip in state["reserved_ips"]}
        # A floating address that dialog.move_address gave to another host of its group is
        # where it should be: the first host does not get a second one.
        moved = {vip["name"] for vip in plan.get("floating_ips") or []
                 if any((state["droplets"].get(n) or {}).get("id") in held
                        for n in vip["hosts"][1:])}
        changes = []
        for host_name, labels in _reserved_ip_wants(plan):
            droplet = state["droplets"].get(host_name)
            if droplet and droplet["id"] in held or set(labels) <= moved:
                continue
            detail = "assigned to %s" % host_name + _shortfall(len(labels))
            changes.append(base.change("create", "reserved_ip", labels[0], detail))
            if dry_run:
                continue
            self.progress("creating reserved IP %s for %s" % (labels[0], host_name))
            # Created already assigned: it can never exist unassigned, hence untraceable.
            reply = self._call("creating a reserved IP for %s" % host_name,
                               self.api.reserved_ips.create, body={"droplet_id": droplet["id"]})
            state["reserved_ips"].append(dict(reply["reserved_ip"], droplet=droplet))
        return changes

    def _ensure_firewalls(self, plan, state, dry_run):
        wanted = firewall_specs(plan)
        changes, todo = [], []
        for name, spec in wanted.items():
            existing = state["firewalls"].get(name)
            if existing is None:
                changes.append(base.change("create", "firewall", name,
                                           "%d inbound rule(s) on tag %s"
                                           % (len(spec["inbound_rules"]), spec["tags"][0])))
                todo.append(("creating", self.api.firewalls.create, name, {"body": spec}))
            elif _firewall_key(existing) != _firewall_key(spec):
                changes.append(base.change("update", "firewall", name,
                                           _rules_diff(existing, spec)))
                todo.append(("updating", self.api.firewalls.update, name,
                             {"firewall_id": existing["id"], "body": spec}))
        for name in sorted(set(state["firewalls"]) - set(wanted)):
            changes.append(base.change("delete", "firewall", name, "no role of the plan"))
        if dry_run:
            return changes
        if todo:
            self._ensure_tags(sorted({tag for _, _, name, _ in todo
                                      for tag in _tags_named(wanted[name])}))
        for verb, operation, name, kwargs in todo:
            self.progress("%s firewall %s" % (verb, name))
            self._call("%s firewall %s" % (verb, name), operation, **kwargs)
        for name in sorted(set(state["firewalls"]) - set(wanted)):
            self.progress("deleting firewall %s" % name)
            self._call("deleting firewall %s" % name, self.api.firewalls.delete,
                       firewall_id=state["firewalls"][name]["id"], missing_ok=True)
        return changes

    def _ensure_tags(self, names):
        """A firewall may only name tags that exist (DigitalOcean answers 422 otherwise), and
        the droplets that will carry them do not exist yet: the missing ones are created."""
        listed = {t["name"] for t in self._list("listing tags", self.api.tags.list, "tags")}
        for name in names:
            if name not in listed:
                self._call("creating tag %s" % name, self.api.tags.create, body={"name": name})


def _tags_named(spec):
    """Every tag a firewall body names: those it applies to and its rules' sources."""
    tags = list(spec.get("tags") or [])
    for rule in spec.get("inbound_rules") or []:
        tags += (rule.get("sources") or {}).get("tags") or []
    for rule in spec.get("outbound_rules") or []:
        tags += (rule.get("destinations") or {}).get("tags") or []
    return tags


def _by_name(droplets):
    """{name: droplet}; of droplets sharing a name, the oldest (lowest id)."""
    found = {}
    for droplet in sorted(droplets, key=lambda d: d["id"]):
        found.setdefault(droplet["name"], droplet)
    return found


def _groups(hosts):
    """[(group, [hosts])] in plan order."""
    groups = {}
    for host in hosts:
        groups.setdefault(host["group"], []).append(host)
    return list(groups.items())


def _shortfall(asked):
    if asked <= 1:
        return ""
    text = ("; the plan asks for %d public addresses on this host and DigitalOcean allows one "
            "reserved IP per droplet: the droplet's own public IPv4 is the second address"
            % asked)
    if asked > 2:
        text += ", %d short" % (asked - 2)
    return text


def _reserved_ip_wants(plan):
    """[(host name, labels)]: one label per public address the plan asks that host to hold,
    the shared (floating) ones first. DigitalOcean gives a droplet one reserved IP at most."""
    wants = {}
    for vip in plan.get("floating_ips") or []:
        if vip["hosts"]:
            wants.setdefault(vip["hosts"][0], []).append(vip["name"])
    for host in plan["hosts"]:
        if host["public_ips"]:
            wants.setdefault(host["name"], []).extend([host["name"]] * host["public_ips"])
    order = [host["name"] for host in plan["hosts"]]
    return sorted(wants.items(), key=lambda item: order.index(item[0]))


def firewall_specs(plan):
    """{name: firewall body}: one firewall per role on the role's tag, and <deployment>-hosts
    on the deployment tag for the rules of every host (SSH from the admin networks)."""
    deployment = plan["deployment"]
    rules = {"*": []}
    for rule in plan["firewall"]:
        rules.setdefault(rule["role"], [])
        inbound = _inbound_rule(deployment, rule)
        if inbound:
            rules[rule["role"]].append(inbound)
    specs = {}
    for role, inbound in rules.items():
        tag = deployment_tag(deployment) if role == "*" else role_tag(deployment, role)
        specs[firewall_name(deployment, role)] = {
            "name": firewall_name(deployment, role), "inbound_rules": inbound,
            "outbound_rules": [dict(r) for r in OUTBOUND_OPEN], "tags": [tag],
            "droplet_ids": []}
    return specs


def _inbound_rule(deployment, rule):
    low, high = rule["from_port"], rule["to_port"]
    ports = str(low) if low == high else "%d-%d" % (low, high)
    if rule["source"] == "internal":
        # The deployment's own droplets, by tag: never an address range.
        sources = {"tags": [deployment_tag(deployment)]}
    elif rule["cidrs"]:
        sources = {"addresses": [str(ipaddress.ip_network(c, strict=False))
                                 for c in rule["cidrs"]]}
    else:
        return None     # admin rule with no admin networks: SSH stays closed
    return {"protocol": rule["protocol"], "ports": ports, "sources": sources}


def _rule_key(rule, side):
    where = rule.get(side) or {}
    ports = str(rule.get("ports") or "0")
    return (rule["protocol"], "0" if ports == "all" else ports,
            tuple(sorted(where.get("addresses") or [])), tuple(sorted(where.get("tags") or [])),
            tuple(sorted(str(i) for i in where.get("droplet_ids") or [])),
            tuple(sorted(where.get("load_balancer_uids") or [])),
            tuple(sorted(where.get("kubernetes_ids") or [])))


def _firewall_key(firewall):
    return (sorted(_rule_key(r, "sources") for r in firewall.get("inbound_rules") or []),
            sorted(_rule_key(r, "destinations") for r in firewall.get("outbound_rules") or []),
            sorted(firewall.get("tags") or []), sorted(firewall.get("droplet_ids") or []))


def _rules_diff(existing, spec):
    have, want = _firewall_key(existing), _firewall_key(spec)
    added = sum(1 for r in want[0] + want[1] if r not in have[0] + have[1])
    removed = sum(1 for r in have[0] + have[1] if r not in want[0] + want[1])
    detail = "%d rules to add, %d to remove" % (added, removed)
    if have[2:] != want[2:]:
        detail += "; applied to tag %s only" % spec["tags"][0]
    return detail
