"""Preflight: everything that can be known to be wrong before the first mutating call.

run_preflight(profile, plan, driver) runs every check and returns every problem at once, each
one line naming the setting and what it should be. Checks make read-only provider calls only
(AWS Describe*/Get*, DigitalOcean GET), so a profile with problems leaves the account as it
was. A check that cannot be carried out (Service Quotas not authorized, a registry this
machine cannot reach) is reported as skipped, never as a problem.

Each check is check_<thing>(profile, plan, driver) -> [problem, ...]; it raises Skipped to
say it could not run.
"""

import base64
import io
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

import paramiko

from lib.errors import DialogError, InputError
from lib.render import ROLE_IMAGES, resolve_images

CLOUDS = ("aws", "digitalocean")
# Service Quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs.
EC2_SERVICE, STANDARD_VCPU_QUOTA = "ec2", "L-1216C47A"
STANDARD_FAMILIES = "acdhimrtz"
# Families whose first letter is a standard one but that have quotas of their own.
OTHER_QUOTA_FAMILIES = ("dl", "hpc", "inf", "mac", "trn")
SKIP_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
              "NoSuchResourceException", "ServiceException", "UnknownOperationException",
              "NotFoundException"}
REGISTRY_TIMEOUT = 10
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


class Skipped(Exception):
    """A check could not be carried out; the message says why (no secret in it)."""


def run_preflight(profile, plan, driver):
    """Every problem the checks find, in check order."""
    return preflight(profile, plan, driver)["problems"]


def preflight(profile, plan, driver):
    """{"ok", "problems", "checked", "skipped"}: checked names each check that ran to the end,
    skipped maps a check's name to the reason it could not run."""
    problems, checked, skipped = [], [], {}
    for check in CHECKS:
        name = check.__name__[len("check_"):]
        try:
            found = check(profile, plan, driver)
        except Skipped as why:
            skipped[name] = str(why)
            continue
        except DialogError as exc:
            # The provider refused a read (credentials, permissions): one line is enough for
            # every check that hits the same refusal.
            found = [str(exc)]
        checked.append(name)
        problems.extend(p for p in found if p not in problems)
    return {"ok": not problems, "problems": problems, "checked": checked, "skipped": skipped}


def _roles(plan):
    return {role for host in plan["hosts"] for role in host["roles"]}


def _is_cloud(plan):
    return plan["provider"] in CLOUDS


# ---- images and registry ---------------------------------------------------------------------

def check_images(profile, plan, _driver):
    """Dialog's own images have no default: every one the plan's roles run must be named."""
    try:
        images = resolve_images(profile.get("images"))
    except InputError as exc:
        return [str(exc)]
    missing = sorted({key for role in _roles(plan) & set(ROLE_IMAGES)
                      for key in ROLE_IMAGES[role] if not images.get(key)})
    if not missing:
        return []
    return ["images.%s: not set; Dialog's images are on no public registry, so name the "
            "image in your registry (e.g. registry.example.com/dialog/%s:<tag>) for the %s "
            "role" % (key, key.replace("_", "-"), _role_of(key)) for key in missing]


def _role_of(image_key):
    return next(role for role, keys in ROLE_IMAGES.items() if image_key in keys)


def check_registry(profile, plan, _driver):
    """Credentials come in pairs; a registry that refuses anonymous pulls of Dialog's images
    needs them, and when given they must be accepted."""
    user, password = profile.get("registry_username"), profile.get("registry_password")
    if bool(user) != bool(password):
        return ["registry_username and registry_password: set both or neither (only %s is "
                "set)" % ("registry_username" if user else "registry_password")]
    try:
        images = resolve_images(profile.get("images"))
    except InputError:
        return []       # check_images says why
    # As the bootstrap logs in: to the profile's registry, else to images.dialog_server's. A
    # profile naming neither a registry nor credentials pulls anonymously and is not probed.
    registry = _registry_host(profile.get("registry"))
    if not registry and user and images.get("dialog_server"):
        registry = _split_ref(images["dialog_server"])[0]
    if not registry:
        return []
    refs = sorted({images[key] for role in _roles(plan) & set(ROLE_IMAGES)
                   for key in ROLE_IMAGES[role] if images.get(key)})
    refs = [ref for ref in refs if _split_ref(ref)[0] == registry]
    problems, unreachable = [], []
    for ref in refs:
        answer = PROBE(profile.get("registry"), ref, user, password)
        if answer == "ok":
            continue
        if answer == "unreachable":
            unreachable.append(ref)
        elif answer == "login":
            problems.append("registry_username, registry_password: %s refuses to serve %s "
                            "without a login; set both (secret) in the profile" % (registry, ref)
                            if not user else
                            "registry_username, registry_password: %s refused these "
                            "credentials for %s" % (registry, ref))
        elif answer == "missing":
            problems.append("images: %s does not exist in %s (check the name and tag)"
                            % (ref, registry))
    if unreachable and not problems and len(unreachable) == len(refs):
        raise Skipped("registry %s did not answer this machine; the hosts may still reach it"
                      % registry)
    return problems


def _registry_host(value):
    if not value:
        return None
    value = str(value)
    return urllib.parse.urlsplit(value).netloc if "://" in value else value.strip("/")


def _split_ref(ref):
    """(registry host, repository, tag or digest) of an image reference, as Docker reads it."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", ref if rest else "library/" + ref
    if "@" in path:
        repository, reference = path.split("@", 1)
    else:
        repository, _, reference = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] \
            else (path, "", "latest")
    return registry, repository, reference


def probe_registry(registry_setting, ref, user, password):
    """Fetch the manifest of ref as Docker would (Registry HTTP API v2, token or basic auth):
    "ok", "login" (credentials needed or refused), "missing" or "unreachable". Credentials go
    only over HTTPS, or over HTTP when the profile's registry says http:// explicitly (Docker's
    insecure-registries case)."""
    registry, repository, reference = _split_ref(ref)
    explicit = str(registry_setting or "")
    scheme = "http" if explicit.startswith("http://") else "https"
    url = "%s://%s/v2/%s/manifests/%s" % (scheme, registry, repository, reference)
    try:
        status, headers = _http("HEAD", url)
        if status == 401:
            status = _authorized(url, headers.get("WWW-Authenticate", ""), repository,
                                 user, password)
    except (OSError, ssl.SSLError, ValueError):
        return "unreachable"
    if status in (200, 307, 308):
        return "ok"
    if status in (401, 403):
        return "login"
    if status == 404:
        return "missing"
    return "unreachable"


def _http(method, url, headers=None):
    request = urllib.request.Request(url, method=method, headers=dict(
        headers or {}, Accept=MANIFEST_TYPES))
    try:
        with urllib.request.urlopen(request, timeout=REGISTRY_TIMEOUT) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def _authorized(url, challenge, repository, user, password):
    """Answer a 401's challenge once: Basic with the credentials, Bearer through the realm
    (anonymously without credentials, like docker pull)."""
    basic = {}
    if user:
        basic = {"Authorization": "Basic " + base64.b64encode(
            ("%s:%s" % (user, password)).encode()).decode()}
    if challenge.lower().startswith("basic"):
        return _http("HEAD", url, basic)[0] if basic else 401
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.get("realm")
    if not realm:
        return 401
    query = {"scope": params.get("scope") or "repository:%s:pull" % repository}
    if params.get("service"):
        query["service"] = params["service"]
    token_url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
    request = urllib.request.Request(token_url, headers=basic)
    try:
        with urllib.request.urlopen(request, timeout=REGISTRY_TIMEOUT) as response:
            body = json.loads(response.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        return exc.code
    token = body.get("token") or body.get("access_token")
    if not token:
        return 401
    return _http("HEAD", url, {"Authorization": "Bearer " + token})[0]


PROBE = probe_registry      # tests replace it to answer without a registry


# ---- SSH ---------------------------------------------------------------------------------------

def check_ssh_keys(profile, plan, driver):
    """Every name in ssh_key_names is registered at the provider; clouds need at least one
    (their images accept no password)."""
    if not _is_cloud(plan):
        return []
    names = list(profile.get("ssh_key_names") or [])
    if not names:
        return ["ssh_key_names: empty; name the key pair registered with %s whose private "
                "half the bootstrap uses (new hosts accept no other login)" % plan["provider"]]
    registered = _registered_keys(plan["provider"], driver)
    missing = [n for n in names if n not in registered]
    if not missing:
        return []
    return ["ssh_key_names: %s %s not registered with %s in %s; registered: %s"
            % (", ".join(repr(n) for n in missing), "is" if len(missing) == 1 else "are",
               plan["provider"], plan["region"], ", ".join(sorted(registered)) or "none")]


def _registered_keys(provider, driver):
    if provider == "aws":
        # pylint: disable=protected-access  # the driver's own error wording for its client
        with driver._errors():
            return {k["KeyName"] for k in driver.ec2.describe_key_pairs().get("KeyPairs") or []}
    return {k["name"] for k in _do_list(driver, "listing SSH keys", driver.api.ssh_keys.list,
                                        "ssh_keys")}


def check_private_key(profile, _plan, _driver):
    """The bootstrap needs a private key: ssh_private_key's text, a readable ssh_key_file, or
    (neither set) what paramiko falls back to: the runner's SSH agent or ~/.ssh/id_*."""
    text, path = profile.get("ssh_private_key"), profile.get("ssh_key_file")
    if text:
        if not _parses(text):
            return ["ssh_private_key: not an unencrypted ed25519, ECDSA or RSA private key "
                    "(the value is not shown)"]
        return []
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                readable = _parses(handle.read())
        except (OSError, UnicodeDecodeError):
            return ["ssh_key_file: %s is not a readable file on this action runner" % path]
        if not readable:
            return ["ssh_key_file: %s holds no unencrypted ed25519, ECDSA or RSA private key"
                    % path]
        return []
    if _runner_has_key():
        return []
    return ["ssh_private_key or ssh_key_file: neither is set, and this action runner has no "
            "SSH agent key or ~/.ssh/id_* file; give the private key the bootstrap logs in "
            "with (ssh_private_key, secret, or a path on the action runners in ssh_key_file)"]


def _runner_has_key():
    home = os.path.expanduser("~/.ssh")
    if any(os.access(os.path.join(home, name), os.R_OK)
           for name in ("id_ed25519", "id_ecdsa", "id_rsa")):
        return True
    if not os.environ.get("SSH_AUTH_SOCK"):
        return False
    agent = paramiko.Agent()
    try:
        return bool(agent.get_keys())
    finally:
        agent.close()


def _parses(text):
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            cls.from_private_key(io.StringIO(text))
            return True
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    return False


# ---- network -----------------------------------------------------------------------------------

def check_admin_networks(_profile, plan, _driver):
    """On a cloud, SSH is open only to admin_networks: empty, nothing could bootstrap."""
    if _is_cloud(plan) and not _admin_networks(plan):
        return ["admin_networks: empty; on %s SSH is open only to these CIDR networks, so list "
                "the networks the action runners connect from (e.g. 198.51.100.0/24)"
                % plan["provider"]]
    return []


def _admin_networks(plan):
    return [cidr for rule in plan.get("firewall") or [] if rule.get("source") == "admin"
            for cidr in rule.get("cidrs") or []]


# ---- account limits ----------------------------------------------------------------------------

def check_limits(_profile, plan, driver):
    if plan["provider"] == "aws":
        return _aws_vcpus(plan, driver)
    if plan["provider"] == "digitalocean":
        return _do_droplets(plan, driver)
    return []


def _standard(instance_type):
    family = re.match(r"[a-z]+", instance_type or "")
    family = family.group(0) if family else ""
    return family[:1] in STANDARD_FAMILIES and not family.startswith(OTHER_QUOTA_FAMILIES)


def _aws_vcpus(plan, driver):
    quota = _aws_quota(driver)
    # pylint: disable=protected-access  # the driver's own error wording and pagination
    with driver._errors():
        reservations = driver._describe("describe_instances", "Reservations", Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        running = [i for r in reservations for i in r["Instances"]
                   if i.get("InstanceLifecycle") != "spot" and _standard(i["InstanceType"])]
        types = sorted({i["InstanceType"] for i in running})
        vcpus = {}
        if types:
            for item in driver._describe("describe_instance_types", "InstanceTypes",
                                         InstanceTypes=types):
                vcpus[item["InstanceType"]] = item["VCpuInfo"]["DefaultVCpus"]
    used = sum(vcpus.get(i["InstanceType"], 0) for i in running)
    ours = sum(vcpus.get(i["InstanceType"], 0) for i in running
               if _tag(i, "dialog:deployment") == plan["deployment"])
    planned = sum(_plan_vcpus(h) for h in plan["hosts"] if _standard(h["size"]))
    adding = max(0, planned - ours)
    if used + adding <= quota:
        return []
    return ["account limits: the plan needs %d more vCPUs of On-Demand standard instances in "
            "%s, but %d of the quota's %d are in use (Service Quotas %s); request an "
            "increase or plan fewer or smaller hosts"
            % (adding, plan["region"], used, quota, STANDARD_VCPU_QUOTA)]


def _plan_vcpus(host):
    return (host.get("instance") or {}).get("vcpus") or host.get("cpus") or 0


def _tag(item, key):
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}.get(key)


def _aws_quota(driver):
    from botocore.exceptions import BotoCoreError, ClientError  # AWS only: boto3 is loaded

    try:
        # pylint: disable=protected-access  # same session, endpoint and call recorder as EC2
        client = driver._client(driver._session(), "service-quotas")
        answer = client.get_service_quota(ServiceCode=EC2_SERVICE,
                                          QuotaCode=STANDARD_VCPU_QUOTA)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in SKIP_CODES or code.endswith("Exception"):
            raise Skipped("Service Quotas answered %s for %s; the vCPU limit was not "
                          "checked" % (code, STANDARD_VCPU_QUOTA)) from None
        raise driver._translate(exc, None, None) from None  # pylint: disable=protected-access
    except BotoCoreError as exc:
        raise Skipped("Service Quotas is not reachable (%s); the vCPU limit was not checked"
                      % type(exc).__name__) from None
    return int(answer["Quota"]["Value"])


def _do_droplets(plan, driver):
    body = _do_call(driver, "reading the account", driver.api.account.get)
    limit = (body.get("account") or {}).get("droplet_limit")
    if limit is None:
        raise Skipped("the account shows no droplet_limit")
    droplets = _do_list(driver, "listing droplets", driver.api.droplets.list, "droplets")
    names = {d["name"] for d in droplets
             if "dialog:%s" % plan["deployment"] in (d.get("tags") or [])}
    adding = sum(1 for h in plan["hosts"] if h["name"] not in names)
    if len(droplets) + adding <= limit:
        return []
    return ["account limits: the plan adds %d droplets to the %d the account has, beyond its "
            "droplet_limit of %d; ask DigitalOcean support to raise it, or plan fewer hosts"
            % (adding, len(droplets), limit)]


# ---- sizes -------------------------------------------------------------------------------------

def check_sizes(_profile, plan, driver):
    """Every planned size is offered in the plan's region."""
    sizes = sorted({h["size"] for h in plan["hosts"] if h.get("size")})
    if not sizes or plan["provider"] not in CLOUDS:
        return []
    if plan["provider"] == "aws":
        # pylint: disable=protected-access  # the driver's own error wording and pagination
        with driver._errors():
            offered = {o["InstanceType"] for o in driver._describe(
                "describe_instance_type_offerings", "InstanceTypeOfferings",
                LocationType="region",
                Filters=[{"Name": "instance-type", "Values": sizes}])}
    else:
        offered = {s["slug"] for s in _do_list(driver, "listing sizes", driver.api.sizes.list,
                                               "sizes")
                   if s.get("available", True) and plan["region"] in (s.get("regions") or [])}
    missing = [s for s in sizes if s not in offered]
    if not missing:
        return []
    return ["region: %s does not offer %s %s the plan needs; choose a region that offers %s"
            % (plan["region"], "size" if len(missing) == 1 else "sizes", ", ".join(missing),
               "it" if len(missing) == 1 else "them")]


# ---- DigitalOcean reads -----------------------------------------------------------------------

def _do_call(driver, what, operation, **params):
    # pylint: disable=protected-access  # the driver's own error wording for its client
    return driver._call(what, operation, **params)


def _do_list(driver, what, operation, key):
    # pylint: disable=protected-access  # the driver's own pagination
    return driver._list(what, operation, key)


CHECKS = [check_images, check_registry, check_ssh_keys, check_private_key,
          check_admin_networks, check_limits, check_sizes]


# ---- reporting ---------------------------------------------------------------------------------

class PreflightFailed(DialogError):
    """Preflight found problems: the execution fails with the whole report in its result."""

    def __init__(self, report):
        problems = report["problems"]
        super().__init__("preflight found %d problem%s; nothing was created or changed: %s"
                         % (len(problems), "s" * (len(problems) != 1),
                            " | ".join(problems)),
                         details=dict(report, ok=False))


def render(report):
    """The report as a person reads it on the action's stdout."""
    checked = report["checked"]
    lines = ["Preflight: %d checks run (%s)" % (len(checked), ", ".join(checked))]
    for name, why in sorted(report["skipped"].items()):
        lines.append("  skipped %s: %s" % (name, why))
    if report["ok"]:
        lines.append("  no problems found")
    else:
        lines.append("  %d problem%s, all to fix before anything is created:"
                     % (len(report["problems"]), "s" * (len(report["problems"]) != 1)))
        lines += ["  - %s" % problem for problem in report["problems"]]
    return "\n".join(lines)
