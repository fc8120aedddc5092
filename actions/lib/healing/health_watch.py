"""Health events of the deployments: the logic behind sensors/health_sensor.py.

Each poll, for every watched deployment and every host its record plans, up to three signals:

* provider: the instance's state in the provider's inventory. A planned host missing, stopped
  or terminated is down at once (source "provider"); one being created (AWS pending,
  DigitalOcean new) counts as a failed poll. An API error says nothing about the hosts.
* probe: one SSH round trip running the host's rendered health checks (lib.health). A host
  that cannot be logged in to is a failed poll (source "probe"); a failing check is a failed
  poll of that check.
* prometheus (healing.prometheus_url): `up` of the host's node exporter. `up == 0` counts as
  unreachable evidence only where SSH gave none (every jump proxy dead): a host SSH reached is
  up, whatever its exporter says.

Debounce: down_polls consecutive failed polls open an outage (one dialog.host_down or
dialog.service_unhealthy); one poll in which the host answers with every check passing (or
the check passes) closes it with one dialog.recovered. A failed poll followed by a good one
starts the count again, so a flapping host never dispatches.

HealthWatch(...).poll_once() runs one poll without StackStorm (the sensor and the chaos
harness both call it); it never raises.
"""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from lib import bootstrap, health, operation_lock, operations
from lib.catalog import default_catalog
from lib.deployment_record import known_deployments, load_record
from lib.deployment_secrets import load_secrets
from lib.errors import DialogError, ProviderError
from lib.hosts import ssh_path
from lib.hosts.docker_install import apt_repository
from lib.hosts.host_keys import HostKeyNotPinned, HostKeyPins, HostKeyRefused
from lib.hosts.registry import registry_settings
from lib.planner import build_plan, validate_region
from lib.profiles import resolve_profile
from lib.render import render_host
from lib.prometheus import PrometheusSource
from lib.providers import open_provider

STATE_KEY = "dialog.%s.health"
REPAIRS_KEY = "dialog.%s.repairs"
DEFAULTS = {"poll_interval": 10, "down_polls": 3, "ssh_timeout": 5.0, "probe_timeout": 20.0,
            "concurrency": 16}
# AWS instance states (EC2 InstanceState) and DigitalOcean droplet statuses.
DOWN_STATES = ("stopping", "stopped", "shutting-down", "terminated", "off", "archive")
BOOTING_STATES = ("pending", "new")
# The login to a jump proxy failing (not the host behind it); a plain ProviderError before
# the jump fallback existed.
JUMP_UNREACHABLE = getattr(bootstrap, "JumpUnreachable", ())
UP_QUERY = 'max by (host, instance) (up{job="node"})'
# Counted per group in the record: the options build_plan takes for them.
COUNT_OPTIONS = {"dialog-server": "dialog_servers", "cassandra": "cassandra_nodes",
                 "storage": "storage_nodes"}


def planned_hosts(record):
    """[{"name", "group", "roles"}] the record's plan has (its tier and group sizes)."""
    groups = record.get("groups") or {}
    options = {option: groups[group] for group, option in COUNT_OPTIONS.items()
               if groups.get(group)}
    if not record.get("with_storage"):
        options.pop("storage_nodes", None)
    plan = build_plan(record["tier"], provider=record.get("provider") or "aws",
                      region=record.get("region"), deployment=record["deployment"],
                      with_storage=bool(record.get("with_storage")),
                      droplet_class=record.get("droplet_class") or "standard", **options)
    return [{"name": h["name"], "group": h["group"], "roles": list(h["roles"])}
            for h in plan["hosts"]]


def deployment_driver(config, record, opener=open_provider):
    """(profile settings, driver) for a recorded deployment: its profile, provider and region,
    as DialogAction.provider_hosts chooses them."""
    settings = resolve_profile(config, record.get("profile"))
    provider = record.get("provider") or settings.get("provider") or "aws"
    region = record.get("region") or (settings.get("region")
                                      if settings.get("provider") == provider else None)
    region = validate_region(default_catalog(), provider, region)
    return settings, opener(provider, settings, region)


def render_context(datastore, settings, record, hosts):
    """What render_host needs for the checks (DialogAction.deployment_context without the
    provider calls: the watch never uploads anything)."""
    return {"deployment": record["deployment"], "tier": record["tier"],
            "provider": record.get("provider") or settings.get("provider"),
            "with_storage": bool(record.get("with_storage")), "hosts": hosts,
            "secrets": load_secrets(datastore, record["deployment"]),
            "images": settings.get("images") or {}, "registry": registry_settings(settings),
            "docker_apt_repository": apt_repository(settings.get("docker_apt_repository")),
            "object_storage": None}


def ssh_settings(datastore, settings, deployment, provider):
    """DialogAction.ssh_options for the watch (the path by the deployment's provider)."""
    return {"user": settings.get("ssh_user") or None, "key_file": settings.get("ssh_key_file"),
            "private_key_text": settings.get("ssh_private_key"),
            "via": ssh_path.resolve_via(settings.get("ssh_address"), provider),
            "host_keys": HostKeyPins(datastore, deployment, settings.get("known_hosts"),
                                     pin_new=False)}


class Seen(object):
    """What one poll learned of one host."""

    def __init__(self, host):
        self.host = host            # the planned host: name, group, roles
        self.down_now = None        # reason: stopped/terminated/missing at the provider
        self.failed = None          # (source, reason) of a failed poll
        self.answered = False       # SSH reached the host and the probe ran
        self.checks = []            # [{"name", "service", "ok", "detail"}] when answered


class HealthWatch(object):
    """The health sensor's state and poll, plain Python.

    datastore: get_value/set_value/list_values like st2's sensor or action service.
    dispatch(trigger, payload): called once per event. clock: epoch seconds.
    opener: lib.providers.open_provider's signature (tests and the chaos harness pass theirs).
    prometheus: {url: object with query(promql)} to reuse, else PrometheusSource(url).
    """

    def __init__(self, datastore, config, dispatch, clock=time.time, logger=None,
                 opener=open_provider, prometheus=None):
        self.datastore, self.config = datastore, config or {}
        self.settings = dict(DEFAULTS, **((self.config.get("healing") or {})))
        self.down_polls = max(1, int(self.settings["down_polls"]))
        self.dispatch, self.clock = dispatch, clock
        self.log = logger or logging.getLogger(__name__)
        self.opener = opener
        self.prometheus = dict(prometheus or {})
        self.errors = 0
        self._inventories = {}      # deployment -> the last inventory read, for a failed read

    # ---- the poll -------------------------------------------------------------------------

    def deployments(self):
        watched = self.settings.get("deployments")
        return list(watched) if watched else known_deployments(self.datastore)

    def poll_once(self, now=None):
        """Poll every watched deployment once; the [(trigger, payload)] dispatched."""
        events = []
        try:
            names = self.deployments()
        except Exception as exc:  # pylint: disable=broad-except
            self._error("listing the deployments", exc)
            return events
        for deployment in names:
            try:
                events += self.poll_deployment(deployment, self.clock() if now is None else now)
            except Exception as exc:  # pylint: disable=broad-except
                # A sensor that raises is restarted in a loop by st2: log and go on.
                self._error(deployment, exc)
        return events

    def poll_deployment(self, deployment, now):
        record = load_record(self.datastore, deployment)
        if not record or not record.get("tier"):
            return []
        planned = planned_hosts(record)
        settings, driver = deployment_driver(self.config, record, self.opener)
        seen = {h["name"]: Seen(h) for h in planned}
        try:
            inventory = driver.inventory(deployment)
            self._inventories[deployment] = inventory
        except Exception as exc:  # pylint: disable=broad-except
            # The provider's API failing says nothing about the hosts: no provider evidence,
            # the probes go to the addresses read last.
            self._error("%s: reading the provider's inventory" % deployment, exc)
            inventory = None
        self._provider_evidence(seen, inventory)
        hosts = inventory if inventory is not None else self._inventories.get(deployment)
        if hosts:
            self._probe_all(deployment, settings, record, hosts, seen)
            self._prometheus_evidence(deployment, hosts, seen)
        state = self._load(deployment)
        events = self._judge(deployment, state, seen, now, self._held(deployment))
        self._save(deployment, state)
        for trigger, payload in events:
            self.dispatch(trigger, payload)
        return events

    def _provider_evidence(self, seen, inventory):
        if inventory is None:
            return
        present = {h["name"]: h for h in inventory}
        for name, item in seen.items():
            host = present.get(name)
            state = (host or {}).get("state")
            if host is None:
                item.down_now = "not found at the provider (terminated or deleted)"
            elif state in DOWN_STATES:
                item.down_now = "%s at the provider" % state
            elif state in BOOTING_STATES:
                item.failed = ("provider", "%s at the provider (being created)" % state)

    # ---- SSH ------------------------------------------------------------------------------

    def _probe_all(self, deployment, settings, record, hosts, seen):
        ssh = ssh_settings(self.datastore, settings, deployment,
                           record.get("provider") or settings.get("provider"))
        context = render_context(self.datastore, settings, record, hosts)
        by_name = {h["name"]: h for h in hosts}
        targets = [by_name[name] for name, item in seen.items()
                   if name in by_name and item.down_now is None and item.failed is None]
        jumps = {h["name"] for h in ssh_path.jump_hosts(hosts)} if ssh["via"] == "jump" \
            else set()
        # Jump proxies first, then the hosts behind them through a proxy that answered this
        # poll: ssh_path.route takes the first proxy of the hosts it is given, and the dead
        # ones are left out of those, so one dead proxy does not make every host behind it
        # look dead (the connection's own fallback to the next proxy does the same within a
        # session; this only spares it the timeout).
        self._probe(context, ssh, hosts, [h for h in targets if h["name"] in jumps], seen)
        route = [h for h in hosts if h["name"] not in jumps or seen[h["name"]].answered]
        rest = [h for h in targets if h["name"] not in jumps]
        if jumps and not ssh_path.jump_hosts(route):
            # No way in this poll: nothing is learned of the hosts behind the proxies (a
            # dead path is not a dead host); Prometheus may still tell.
            self.log.warning("%s: no jump proxy answered; the hosts behind them are not "
                             "probed this poll", deployment)
            rest = []
        self._probe(context, ssh, route, rest, seen)

    def _probe(self, context, ssh, route, targets, seen):
        """Probe `targets` concurrently, each session routed through the hosts of `route`."""
        if not targets:
            return
        workers = max(1, min(int(self.settings["concurrency"]), len(targets)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(lambda h: self._probe_host(context, ssh, h, route),
                                     targets))
        for host, (kind, detail) in zip(targets, outcomes):
            item = seen[host["name"]]
            if kind in ("answered", "reached"):
                item.answered, item.checks = True, detail
            elif kind == "unknown":
                self.log.warning("%s: %s", host["name"], detail)
            else:
                item.failed = ("probe", detail)

    def _probe_host(self, context, ssh, host, route):
        """("answered", checks) or ("failed", reason); never raises."""
        try:
            rendered = render_host(context, host["name"])
        except Exception as exc:  # pylint: disable=broad-except
            # Its checks unknown (reachability is still worth knowing); the same error made
            # the last deploy or status fail too.
            self._error("%s: rendering its checks" % host["name"], exc)
            rendered = None
        if rendered is None:
            return self._reach_only(host, ssh, route)
        services = {c["name"]: c.get("service") or c.get("role") for c in
                    rendered.get("checks") or []}
        reason = None
        for _ in range(2):
            try:
                with self._session(host, ssh, route) as connection:
                    results = self._run_checks(connection, rendered)
                return "answered", [dict(r, service=services.get(r["name"]) or r.get("role"))
                                    for r in results]
            except operations.DROPPED as exc:
                # A dropped connection says nothing of the host yet: asked once more.
                reason = "SSH connection dropped: %s" % (str(exc) or type(exc).__name__)
            except JUMP_UNREACHABLE as exc:
                # Every jump proxy failed the login (lib.operations.session tried each): the
                # path is dead, not necessarily the host; nothing learned of it this poll.
                return "unknown", str(exc)
            except HostKeyNotPinned as exc:
                # Being made (a replacement after dialog.retire_host): its deploy pins the key.
                return "unknown", str(exc)
            except HostKeyRefused as exc:
                return "failed", "its SSH host key changed: %s" % str(exc).split(";")[0]
            except DialogError as exc:
                return "failed", str(exc)
            except Exception as exc:  # pylint: disable=broad-except
                self._error("%s: probing" % host["name"], exc)
                return "failed", "probe crashed: %s" % type(exc).__name__
        return "failed", reason

    def _reach_only(self, host, ssh, route):
        """("reached", None) when SSH logs in, else ("failed", reason)."""
        try:
            with self._session(host, ssh, route) as connection:
                health.remote(connection, "true", timeout=float(self.settings["probe_timeout"]))
            return "reached", None
        except Exception as exc:  # pylint: disable=broad-except
            return "failed", str(exc) if isinstance(exc, DialogError) else type(exc).__name__

    def _session(self, host, ssh, hosts):
        return operations.session(host, ssh, hosts=hosts,
                                  timeout=float(self.settings["ssh_timeout"]))

    def _run_checks(self, connection, rendered):
        if not rendered.get("checks"):
            health.remote(connection, "true", timeout=float(self.settings["probe_timeout"]))
            return []
        # One round (timeout 0): each check once at the probe's own per-attempt limits; the
        # debounce, not the probe, waits out a slow start.
        result = health.run_probe(connection, rendered,
                                  health.probe_request(rendered, timeout=0),
                                  timeout=float(self.settings["probe_timeout"]))
        return health.scrub_results(rendered, result["health"]["results"])

    # ---- Prometheus -----------------------------------------------------------------------

    def _prometheus_evidence(self, deployment, hosts, seen):
        url = self.settings.get("prometheus_url")
        if not url:
            return
        source = self.prometheus.get(url)
        if source is None:
            source = self.prometheus[url] = PrometheusSource(url)
        try:
            series = source.query(UP_QUERY)
        except Exception as exc:  # pylint: disable=broad-except
            self._error("%s: prometheus up" % deployment, exc)
            return
        by_address = {h.get("private_address"): h["name"] for h in hosts}
        for item in series:
            labels, sample = item.get("metric") or {}, item.get("value") or [None, None]
            name = labels.get("host") or by_address.get(
                (labels.get("instance") or "").rsplit(":", 1)[0])
            target = seen.get(name)
            if target is None or target.answered or target.down_now or target.failed:
                continue
            try:
                up = float(sample[1])
            except (TypeError, ValueError, IndexError):
                continue
            if up == 0:
                target.failed = ("prometheus", "node exporter target down in Prometheus "
                                 "(up == 0) and no SSH path to the host this poll")
            else:
                target.answered = True     # scraped: up, its checks unknown this poll
                target.checks = None

    # ---- debounce -------------------------------------------------------------------------

    def _held(self, deployment):
        """True while deploy, scale or destroy holds the deployment's lock: they create and
        remove hosts and restart services on purpose, so no new outage is opened then (the
        counts go on: a fault still there when the lock is released is reported at once). A
        repair's lock holds nothing back: faults must be seen while a repair runs."""
        holder = operation_lock.holder_of(self.datastore, deployment)
        if not holder:
            return False
        # The heal_* workflows lock as "repair" (their nested deploy re-enters that lock).
        if str(holder.get("operation") or "") in ("repair",) or \
                str(holder.get("operation") or "").startswith("heal"):
            return False
        repairs = self.datastore.get_value(REPAIRS_KEY % deployment, local=False)
        try:
            active = (json.loads(repairs) or {}).get("active") if repairs else None
        except ValueError:
            active = None
        return not active

    def _judge(self, deployment, state, seen, now, held):
        events = []
        hosts = state.setdefault("hosts", {})
        for name in [n for n in hosts if n not in seen]:
            del hosts[name]         # no longer planned (scaled in): forgotten
        for name, item in seen.items():
            entry = hosts.setdefault(name, {"fails": 0, "since": None, "reported": False,
                                            "checks": {}})
            base = {"deployment": deployment, "host": name, "roles": item.host["roles"],
                    "group": item.host["group"]}
            if item.down_now or item.failed:
                source, reason = ("provider", item.down_now) if item.down_now else item.failed
                entry["fails"] += 1
                entry["since"] = entry["since"] or now
                due = item.down_now is not None or entry["fails"] >= self.down_polls
                if due and not entry["reported"] and not held:
                    entry["reported"] = True
                    entry["checks"] = {}    # the host's outage covers its services
                    events.append(("dialog.host_down", dict(
                        base, reason=reason, source=source, since=entry["since"],
                        polls=entry["fails"])))
                continue
            if not item.answered:
                continue                    # no evidence either way this poll
            checks = item.checks
            if entry["reported"]:
                # Recovery takes every check passing: a host being re-created answers SSH
                # long before its services run, and that is still the same outage. One such
                # poll is enough: a recovered event only closes the outage, and a new one again
                # needs down_polls failed polls (the brakes stop a second repair in a window).
                if checks is not None and all(c["ok"] for c in checks):
                    events.append(("dialog.recovered", dict(
                        base, service=None, down_for=round(now - entry["since"], 3))))
                    entry.update(fails=0, since=None, reported=False, checks={})
                continue
            entry.update(fails=0, since=None)
            if checks is not None:
                events += self._judge_checks(base, entry, checks, now, held)
        return events

    def _judge_checks(self, base, entry, checks, now, held):
        events = []
        known = entry.setdefault("checks", {})
        for name in [n for n in known if n not in {c["name"] for c in checks}]:
            del known[name]
        for check in checks:
            mark = known.setdefault(check["name"], {"fails": 0, "since": None,
                                                    "reported": False})
            if check["ok"]:
                if mark["reported"]:
                    events.append(("dialog.recovered", dict(
                        base, service=check.get("service") or check["name"],
                        down_for=round(now - mark["since"], 3))))
                del known[check["name"]]
                continue
            mark["fails"] += 1
            mark["since"] = mark["since"] or now
            if mark["fails"] >= self.down_polls and not mark["reported"] and not held:
                mark["reported"] = True
                events.append(("dialog.service_unhealthy", dict(
                    base, service=check.get("service") or check["name"], check=check["name"],
                    reason=str(check.get("detail") or "failed"), since=mark["since"],
                    polls=mark["fails"])))
        return events

    # ---- state ----------------------------------------------------------------------------

    def _load(self, deployment):
        try:
            stored = self.datastore.get_value(STATE_KEY % deployment, local=False)
            return json.loads(stored) if stored else {}
        except Exception as exc:  # pylint: disable=broad-except
            self._error("%s: reading the health state" % deployment, exc)
            return {}

    def _save(self, deployment, state):
        # Kept in the datastore: a restarted sensor neither reports an open outage again nor
        # forgets to report its recovery.
        self.datastore.set_value(STATE_KEY % deployment, json.dumps(state, sort_keys=True),
                                 local=False)

    def _error(self, what, exc):
        self.errors += 1
        if isinstance(exc, (DialogError, ProviderError)):
            self.log.warning("health watch: %s: %s", what, exc)
        else:
            self.log.exception("health watch: %s: %s", what, type(exc).__name__)
