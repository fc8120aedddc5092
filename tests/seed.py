"""A reader of the seed document (fixtures/dialog-server-requirements.rst) for the tests.

It knows the document's shape (tiers underlined with '-', server blocks whose Hardware, Cloud
service and Network lists are underlined with '~') and nothing of the catalog, so tests can
compare the catalog with the seed's own text figure by figure.
"""

import os
import re

SEED_FILE = os.path.join(os.path.dirname(__file__), "fixtures", "dialog-server-requirements.rst")

TIER_TITLES = {
    "Mini installations": "mini",
    "Small installations": "small",
    "Small installations with failover": "small-failover",
    "Production installations": "production",
}

DROPLET = re.compile(
    r"(\d+) GB/(\d+) vCPUs/(\d+) GB/(\d+) TB (Standard|Optimized) Droplets"
    r"(?: with (\d+) GB block storage)?")
AWS = re.compile(r"AWS: (t2\.\w+)(?: with (\d+) ?GB (SSD|HDD))?")
DISK = re.compile(r"(\d+)\+? GB (SSD|HDD)")
PORTS = re.compile(r"(tcp|udp): (.+)")
CAPACITY = re.compile(r"up to (\d+)(?:-(\d+)|\+) users")


def _underline(line, char):
    return len(line) >= 3 and set(line.strip()) == {char}


def _bullet(line):
    text = line.strip()
    return text[2:].strip() if text.startswith("* ") else None


def _new_block(label):
    return {"label": " ".join(label), "cpus": None, "memory_gb": None, "disks": [],
            "aws": None, "droplets": {}, "ports": set(), "network": []}


def _read_bullet(block, section, text, exposure):
    if section == "Hardware":
        if text.endswith("cores CPU"):
            block["cpus"] = int(text.split()[0])
        elif text.endswith("GB RAM"):
            block["memory_gb"] = int(text.split()[0])
        else:
            size, kind = DISK.match(text).groups()
            block["disks"].append((int(size), kind.lower()))
    elif section == "Cloud service":
        if text.startswith("AWS:"):
            itype, size, kind = AWS.match(text).groups()
            block["aws"] = (itype, (int(size), kind.lower()) if size else None)
        elif text.startswith("DO:"):
            for found in DROPLET.finditer(text):
                memory, vcpus, disk, transfer, klass, volume = found.groups()
                block["droplets"][klass.lower()] = {
                    "memory_gb": int(memory), "vcpus": int(vcpus), "disk_gb": int(disk),
                    "transfer_tb": int(transfer), "volume_gb": int(volume) if volume else None}
    elif section == "Network":
        ports = PORTS.match(text)
        if ports:
            protocol, listed = ports.groups()
            for item in listed.split(","):
                block["ports"].add((protocol, item.strip(), exposure))
        else:
            block["network"].append(text)


def read_seed(path=SEED_FILE):
    """{tier: {"capacity": (min, max|None), "blocks": [block, ...]}} in document order."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    tiers, tier, block, section, exposure, prose = {}, None, None, None, None, []
    for number, line in enumerate(lines):
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if not line.strip() or _underline(line, "-") or _underline(line, "~") \
                or _underline(line, '"'):
            continue
        if _underline(following, "-") and line.strip() in TIER_TITLES:
            tier = {"capacity": None, "blocks": []}
            tiers[TIER_TITLES[line.strip()]] = tier
            prose, block = [], None
            continue
        if _underline(following, '"'):
            prose = [line.strip()]  # the group heading ("Web, proxy, etc services") names it
            continue
        if _underline(following, "~"):
            section = line.strip()
            if section == "Hardware":
                block = _new_block(prose)
                tier["blocks"].append(block)
                prose = []
            continue
        text = _bullet(line)
        if text is None:
            if tier is not None:
                capacity = CAPACITY.search(line)
                if capacity and tier["capacity"] is None:
                    high = capacity.group(2)
                    tier["capacity"] = (int(capacity.group(1)), int(high) if high else None)
                prose.append(line.strip())
            continue
        if block is None:
            continue
        lowered = text.lower()
        if "external lan ports" in lowered:
            exposure = "external"
        elif "internal lan ports" in lowered:
            exposure = "internal"
        elif text.endswith(":") and section == "Network":
            continue  # "turns-server:" and "push-server:" group the bullets below them
        else:
            _read_bullet(block, section, text, exposure)
        prose = []
    return tiers
