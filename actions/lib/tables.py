"""Plain-text tables for people reading results in the st2 CLI or in chat."""

from lib.providers.base import summarize


def format_table(headers, rows):
    """Left-aligned columns separated by two spaces; every cell is turned into text."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _ports(rule):
    if rule["from_port"] == rule["to_port"]:
        return str(rule["from_port"])
    return "%d-%d" % (rule["from_port"], rule["to_port"])


def _disks(disks):
    return ", ".join("%d %s %s" % (d["size_gb"], d["kind"], d["purpose"]) for d in disks) or "-"


def _capacity(capacity):
    if capacity["users_max"] is None:
        return "%d+ users" % capacity["users_min"]
    return "%d-%d users" % (capacity["users_min"], capacity["users_max"])


def render_plan(plan):
    """A summary of a plan as the operator reviews it before provisioning."""
    where = plan["provider"]
    if plan["provider"] != "static":
        where += " " + plan["region"]
    if plan.get("droplet_class"):
        where += " (%s droplets)" % plan["droplet_class"]
    out = ['Plan for deployment "%s": %s, %s, on %s'
           % (plan["deployment"], plan["title"], _capacity(plan["capacity"]), where), ""]
    out.append(format_table(
        ["HOST", "ROLES", "SIZE", "CPUS", "MEM GB", "DISKS (GB)", "PUBLIC IPS"],
        [[h["name"], ",".join(h["roles"]), h["size"] or "operator host", h["cpus"],
          h["memory_gb"], _disks(h["disks"]), h["public_ips"] or "-"] for h in plan["hosts"]]))
    for vip in plan["floating_ips"]:
        out.append("Floating IP %s moves between %s" % (vip["name"], ", ".join(vip["hosts"])))
    for title, source in (("Open to the internet", "public"),
                          ("Open only between the deployment's hosts", "internal")):
        grouped = {}
        for rule in plan["firewall"]:
            if rule["source"] == source:
                grouped.setdefault((rule["role"], rule["protocol"]), []).append(_ports(rule))
        if grouped:
            out += ["", title + ":"]
            out.append(format_table(["ROLE", "PROTO", "PORTS"],
                                    [[role, proto, ", ".join(ports)]
                                     for (role, proto), ports in grouped.items()]))
    for rule in plan["firewall"]:
        if rule["source"] == "monitoring":
            out += ["", "Prometheus (tcp %s on %s) open to: %s"
                    % (_ports(rule), rule["role"], ", ".join(rule["cidrs"]))]
    if plan.get("nat_gateways"):
        out += ["", "Egress: %d NAT gateway for the hosts without a public address (none when "
                "the profile names a subnet_id of its own)" % plan["nat_gateways"]]
    ssh = [r for r in plan["firewall"] if r["source"] == "admin"]
    for rule in ssh:
        out.append("")
        if rule["cidrs"]:
            out.append("SSH (tcp %s) open to: %s" % (_ports(rule), ", ".join(rule["cidrs"])))
        else:
            out.append("SSH (tcp %s) closed: no admin_networks given" % _ports(rule))
    totals = plan["totals"]
    out += ["", "Totals: %d hosts, %d cpus, %d GB memory, %d GB disk, %d public IPs"
            % (totals["hosts"], totals["cpus"], totals["memory_gb"], totals["disk_gb"],
               plan["public_ips"])]
    return "\n".join(out)


def render_changes(changes, dry_run=False):
    """The change set, Terraform style: one line per change, then the counts."""
    if not changes:
        return "No changes: the provider already matches the plan."
    marks = {"create": "+", "update": "~", "delete": "-"}
    counts = summarize(changes)
    table = format_table(["", "KIND", "NAME", "DETAIL"],
                         [[marks[c["action"]], c["kind"], c["name"], c["detail"]]
                          for c in changes])
    return "%s\n\n%s %d to add, %d to change, %d to destroy." % (
        table, "Dry run, nothing changed:" if dry_run else "Applied:",
        counts["create"], counts["update"], counts["delete"])


def render_hosts(hosts):
    """An inventory: what each host is and where it can be reached."""
    if not hosts:
        return "No hosts."
    return format_table(
        ["HOST", "ROLES", "SIZE", "STATE", "PRIVATE", "PUBLIC", "VOLUMES (GB)"],
        [[h["name"], ",".join(h["roles"]), h.get("size") or "-", h.get("state") or "-",
          h.get("private_address") or "-", ", ".join(h.get("public_addresses") or []) or "-",
          ", ".join(str(v["size_gb"]) for v in h.get("volumes") or []) or "-"]
         for h in hosts])


def render_status(status):
    """A deployment's health: one line per host, then what fails and where clients connect."""
    hosts = status["hosts"]
    if not hosts:
        return 'Deployment "%s": no hosts.' % status["deployment"]
    rows = []
    for host in hosts:
        checks = host.get("checks") or []
        failing = [c for c in checks if not c["ok"]]
        if host.get("error"):
            state = "UNREACHABLE"
        elif failing:
            state = "UNHEALTHY (%d/%d failing)" % (len(failing), len(checks))
        else:
            state = "healthy (%d checks)" % len(checks)
        rows.append([host["name"], ",".join(host["roles"]),
                     host.get("private_address") or "-",
                     ", ".join(host.get("public_addresses") or []) or "-", state])
    out = ['Deployment "%s": %s' % (status["deployment"],
                                    "healthy" if status["healthy"] else "NOT healthy"), ""]
    out.append(format_table(["HOST", "ROLES", "PRIVATE", "PUBLIC", "HEALTH"], rows))
    problems = [(h["name"], h["error"]) for h in hosts if h.get("error")]
    problems += [(h["name"], "%s (%s): %s" % (c["name"], c["role"], c["detail"]))
                 for h in hosts for c in h.get("checks") or [] if not c["ok"]]
    if problems:
        out += ["", "Failing:"] + ["  %s: %s" % p for p in problems]
    endpoints = status.get("endpoints") or {}
    shown = [(k, endpoints[k]) for k in ("web", "api", "websocket", "mobile") if k in endpoints]
    shown += [("turn", ", ".join(endpoints.get("turn") or []))] if endpoints.get("turn") else []
    if shown:
        out += ["", "Endpoints:"] + ["  %-9s %s" % item for item in shown]
    return "\n".join(out)
