"""HostMetricsSensor: the deployments' host metrics from Prometheus, turned into scale requests.

Thin: the decisions are lib.autoscale's and the queries lib.prometheus's (plain Python under
actions/lib, shared with the actions and the benchmark so that one catalog and one set of rules
exist). StackStorm puts only sensors/ on a sensor's path, hence the path line below.
"""

import json
import os
import sys
import time

from st2reactor.sensor.base import PollingSensor

_ACTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions")
if _ACTIONS not in sys.path:
    sys.path.append(_ACTIONS)

# pylint: disable=wrong-import-position
from lib import autoscale  # noqa: E402
from lib.deployment_record import load_record  # noqa: E402
from lib.errors import DialogError  # noqa: E402
from lib.operation_lock import lock_key  # noqa: E402
from lib.prometheus import PrometheusSource  # noqa: E402

PACK = "dialog"
STATE_KEY = "autoscaling.%s.state"  # local to this sensor class: streaks, pending requests


class HostMetricsSensor(PollingSensor):
    """Polls each watched deployment's Prometheus; dispatches dialog.scale_requested,
    dialog.tier_capacity and (rate-limited) dialog.metrics_unavailable. Never raises."""

    def __init__(self, sensor_service, config=None, poll_interval=None):
        settings = (config or {}).get("autoscaling") or {}
        # st2 always passes the sensor YAML's poll_interval; the pack config's setting wins.
        super(HostMetricsSensor, self).__init__(
            sensor_service=sensor_service, config=config,
            poll_interval=settings.get("poll_interval") or poll_interval or 30)
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self._settings = settings
        self._policy = autoscale.policy_from(settings)
        self._sources = {}
        self.clock = time.time

    def setup(self):
        pass

    def poll(self):
        for watch in self._settings.get("deployments") or []:
            try:
                self._poll_deployment(watch)
            except Exception as exc:  # pylint: disable=broad-except
                # A sensor that raises is restarted in a loop by st2; log and try next poll.
                self._logger.exception("autoscaling %s: %s", watch.get("deployment"), exc)

    def _source(self, watch):
        url = watch["prometheus_url"]
        if url not in self._sources:
            self._sources[url] = PrometheusSource(
                url, users_query=self._settings.get("users_query"),
                window=self._settings.get("rate_window") or "2m")
        return self._sources[url]

    def _poll_deployment(self, watch):
        deployment = watch["deployment"]
        now = self.clock()
        state = self._load_state(deployment)
        record = load_record(self.sensor_service, deployment) or {}
        try:
            metrics = self._source(watch).fetch()
            if not isinstance(metrics, dict) or \
                    not any(metrics.get(name) for name in ("cpu", "disk")):
                raise DialogError("prometheus at %s returned no host metrics"
                                  % watch["prometheus_url"])
        except Exception as exc:  # pylint: disable=broad-except
            # The client turns every answer it cannot use into a ProviderError; anything else
            # is a bug of ours, and still means "no metrics", not a failed poll.
            if not isinstance(exc, DialogError):
                self._logger.exception("autoscaling %s: reading metrics", deployment)
                exc = "%s from the metrics client: %s" % (exc.__class__.__name__, exc)
            autoscale.forget_streaks(state)
            if autoscale.unavailable_due(state, now, self._policy):
                self._dispatch("dialog.metrics_unavailable", {
                    "deployment": deployment, "source": watch["prometheus_url"],
                    "reason": str(exc)}, deployment, now)
            self._save_state(deployment, state)
            return
        state.pop("unavailable_reported", None)
        tier = record.get("tier") or watch.get("tier")
        if not tier:
            self._logger.warning("autoscaling %s: no tier known (deploy it with dialog.deploy "
                                 "or set the watch's tier)", deployment)
            return
        # While deploy, scale or destroy holds the deployment's lock, hosts come and go.
        busy = bool(self.sensor_service.get_value(lock_key(deployment), local=False))
        findings = autoscale.evaluate(self._policy, deployment, tier, record.get("groups"),
                                      metrics, now, state, bool(record.get("with_storage")),
                                      last_scaled=record.get("last_scaled"), busy=busy)
        # Remembered before dispatched: a sensor that dies in between loses one request (asked
        # again after reask_interval) rather than announcing it twice.
        self._save_state(deployment, state)
        for kind, payload in findings:
            self._dispatch("dialog." + kind, payload, deployment, now)

    def _dispatch(self, trigger, payload, deployment, now):
        tag = "dialog-autoscale-%s-%s-%d" % (deployment, payload.get("role", trigger.split(".")[1]),
                                             int(now))
        self._logger.info("%s: %s", trigger, json.dumps(payload, sort_keys=True))
        self.sensor_service.dispatch(trigger=trigger, payload=payload, trace_tag=tag)

    def _load_state(self, deployment):
        stored = self.sensor_service.get_value(STATE_KEY % deployment, local=True)
        return json.loads(stored) if stored else {}

    def _save_state(self, deployment, state):
        self.sensor_service.set_value(STATE_KEY % deployment, json.dumps(state, sort_keys=True),
                                      local=True)

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
