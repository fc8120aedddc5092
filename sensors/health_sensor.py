"""HealthSensor: every watched deployment's hosts and services, turned into health events.

Thin: the signals, the debounce and the payloads are lib.healing.health_watch's (plain Python
under actions/lib, which the chaos harness runs without StackStorm). StackStorm puts only
sensors/ on a sensor's path, hence the path line below.
"""

import json
import os
import sys

from st2reactor.sensor.base import PollingSensor

_ACTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions")
if _ACTIONS not in sys.path:
    sys.path.append(_ACTIONS)

# pylint: disable=wrong-import-position
from lib.healing.health_watch import DEFAULTS, HealthWatch  # noqa: E402


class HealthSensor(PollingSensor):
    """Polls the provider's instance states, the hosts' health checks over SSH and, when
    configured, Prometheus `up`; dispatches dialog.host_down, dialog.service_unhealthy and
    dialog.recovered. Never raises."""

    def __init__(self, sensor_service, config=None, poll_interval=None):
        settings = (config or {}).get("healing") or {}
        # st2 always passes the sensor YAML's poll_interval; the pack config's setting wins.
        super(HealthSensor, self).__init__(
            sensor_service=sensor_service, config=config,
            poll_interval=settings.get("poll_interval") or poll_interval
            or DEFAULTS["poll_interval"])
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self.watch = HealthWatch(self.sensor_service, config, self._dispatch,
                                 logger=self._logger)

    def setup(self):
        pass

    def poll(self):
        try:
            self.watch.poll_once()
        except Exception as exc:  # pylint: disable=broad-except
            # poll_once() catches per deployment; this is the last net (st2 restarts a sensor
            # that raises, in a loop).
            self._logger.exception("health watch: %s", exc)

    def _dispatch(self, trigger, payload):
        # One outage, one tag: the announcement and the repair it starts are traced together.
        tag = "dialog-health-%s-%s-%s-%d" % (payload["deployment"], payload["host"],
                                             trigger.split(".")[1],
                                             int(payload.get("since") or self.watch.clock()))
        self._logger.info("%s: %s", trigger, json.dumps(payload, sort_keys=True))
        self.sensor_service.dispatch(trigger=trigger, payload=payload, trace_tag=tag)

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
