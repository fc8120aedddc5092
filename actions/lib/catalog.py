"""The tier catalog: the seed's tables, loaded from data/catalog.yaml and checked at load."""

import functools
import os

import jsonschema
import yaml

from lib.errors import CatalogError

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CATALOG_FILE = os.path.join(DATA_DIR, "catalog.yaml")
SCHEMA_FILE = os.path.join(DATA_DIR, "catalog.schema.yaml")

PROVIDERS = ("aws", "digitalocean", "static")
DROPLET_CLASSES = ("standard", "optimized")


def parse_port_range(text):
    """'80' -> (80, 80); '49152-65535' -> (49152, 65535)."""
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def allowed_counts(count, limit=None):
    """The counts a server group may have: its choices, or min, min+step, ... up to limit."""
    if "choices" in count:
        return list(count["choices"])
    limit = limit if limit is not None else count["min"] + 10 * count["step"]
    return list(range(count["min"], limit + 1, count["step"]))


def count_is_allowed(count, value):
    if "choices" in count:
        return value in count["choices"]
    return value >= count["min"] and (value - count["min"]) % count["step"] == 0


def describe_counts(count):
    """How a person would say which counts are allowed."""
    if "choices" in count:
        return [str(c) for c in count["choices"]]
    low, step = count["min"], count["step"]
    return ["%d, %d, %d, ..." % (low, low + step, low + 2 * step)]


class Catalog:
    """Read-only view over the validated catalog document."""

    def __init__(self, document):
        self.doc = document

    @property
    def tier_names(self):
        return list(self.doc["tiers"])

    @property
    def role_names(self):
        return list(self.doc["roles"])

    def tier(self, name):
        return self.doc["tiers"][name]

    def provider(self, name):
        return self.doc["providers"][name]

    @property
    def extra_ports(self):
        return self.doc["extra_ports"]

    def port(self, role, purpose):
        """The port of a role for a purpose, e.g. port("postgres", "pgbouncer")."""
        return self.doc["services"][role][purpose]

    def droplet_size(self, slug):
        return self.provider("digitalocean")["sizes"][slug]

    def instance_type(self, name):
        return self.provider("aws")["instance_types"][name]


def _ports_of(document, role):
    """Every port number of a role, over all tiers and extra_ports (range ends included)."""
    found = set()
    rules = [r for t in document["tiers"].values() for s in t["servers"] for r in s["ports"]]
    for rule in rules + document["extra_ports"]:
        if rule["role"] == role:
            for text in rule["ports"]:
                low, high = parse_port_range(text)
                found.update((low, high))
    return found


def _check(document):
    """What the JSON schema cannot say: references resolve and counts are consistent."""
    problems = []
    roles = set(document["roles"])
    aws = document["providers"]["aws"]
    droplets = document["providers"]["digitalocean"]["sizes"]
    for extra in document["extra_ports"]:
        if extra["role"] not in roles | {"*"}:
            problems.append("extra_ports: unknown role %r" % extra["role"])
    for role, ports in document["services"].items():
        listed = _ports_of(document, role)
        for purpose, port in ports.items():
            if port not in listed:
                problems.append("services.%s.%s: port %d is not a port of %s"
                                % (role, purpose, port, role))
    for tier_name, tier in document["tiers"].items():
        seen = set()
        for server in tier["servers"]:
            where = "tiers.%s.%s" % (tier_name, server["name"])
            if server["name"] in seen:
                problems.append("%s: server name used twice" % where)
            seen.add(server["name"])
            for role in server["roles"]:
                if role not in roles:
                    problems.append("%s: unknown role %r" % (where, role))
            count = server["count"]
            if not count_is_allowed(count, count["default"]):
                problems.append("%s: default count %d is not allowed" % (where, count["default"]))
            if server["aws"]["instance_type"] not in aws["instance_types"]:
                problems.append("%s: unknown AWS instance type" % where)
            for klass in ("standard", "optimized"):
                slug = server["digitalocean"][klass]["size"]
                if slug not in droplets:
                    problems.append("%s: unknown droplet size %r" % (where, slug))
                elif droplets[slug]["class"] != klass:
                    problems.append("%s: %r is not a %s droplet" % (where, slug, klass))
            for rule in server["ports"]:
                if rule["role"] not in server["roles"]:
                    problems.append("%s: port rule for role %r not on this server"
                                    % (where, rule["role"]))
                for text in rule["ports"]:
                    low, high = parse_port_range(text)
                    if not 1 <= low <= high <= 65535:
                        problems.append("%s: bad port range %r" % (where, text))
    if problems:
        raise CatalogError("catalog.yaml is inconsistent: " + "; ".join(problems))


def load_catalog(path=CATALOG_FILE, schema_path=SCHEMA_FILE):
    """Load and validate a catalog file; raises CatalogError naming what is wrong."""
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    with open(schema_path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        location = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        raise CatalogError("catalog.yaml: %s: %s" % (location, exc.message)) from None
    _check(document)
    return Catalog(document)


@functools.lru_cache(maxsize=1)
def default_catalog():
    """The pack's own catalog, loaded once per process (sensors poll; actions run once)."""
    return load_catalog()
