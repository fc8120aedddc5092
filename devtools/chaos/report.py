"""The failover benchmark's table, its published anchors and the run's verdict."""

from lib.tables import format_table

from .timeline import HEADERS

# Seconds within which the service must answer again after these faults (issue 14's target).
TARGET_SECONDS = 60
TARGET_GROUPS = ("proxy", "postgres")

# What other failover tools publish, for scale (see each project's documentation).
ANCHORS = [
    ("Patroni", "leader TTL 30 s by default (ttl: 30): a dead primary's leader key expires, "
                "then a replica is promoted; loop_wait 10 s"),
    ("keepalived", "VRRP advert_int 1 s: the backup takes the VIP after 3 missed adverts plus "
                   "skew, about 3-4 s"),
    ("EC2 Auto Scaling", "health-check grace period 300 s by default; an unhealthy instance is "
                         "replaced by launching a new one: minutes"),
]


def table(rows):
    return format_table(HEADERS, [r.row() for r in rows])


def anchors():
    return format_table(["FOR SCALE", "PUBLISHED BEHAVIOUR"], ANCHORS)


def target_misses(rows, groups):
    """Rows of a proxy or Postgres fault whose service took longer than the target (or never
    came back). groups: fault name -> the faulted host's group."""
    return [r for r in rows if groups.get(r.fault) in TARGET_GROUPS
            and (r.service_back is None or r.service_back > TARGET_SECONDS)]


def verdict(rows, expected, final_healthy, announcements, lost_total):
    """[] when the run passes, else the reasons it does not: every expected fault repaired
    (redundancy back) with no human step, no committed write lost, every host healthy at the
    end, and the chat announcements printed."""
    problems = []
    done = {r.fault for r in rows if r.redundant is not None}
    for fault in expected:
        if fault not in done:
            problems.append("%s: not repaired to full redundancy" % fault)
    if lost_total:
        problems.append("%d committed writes lost" % lost_total)
    if not final_healthy:
        problems.append("not every host is healthy at the end")
    if not announcements:
        problems.append("no chat announcement was made")
    return problems
