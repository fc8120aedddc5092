"""Host metrics of a deployment from Prometheus' HTTP API: one instant query per metric.

Each query aggregates by (role, instance) on the Prometheus side, so a poll costs one request
per metric however many hosts there are. The `role` label comes from the scrape configuration
the deploy renders on the web host (templates/prometheus.yml.j2); any Prometheus whose node
targets carry it works.
"""

import json
import math

import requests

from lib.errors import ProviderError
from lib.hosts import volumes

# Fractions 0..1, except load (per core) and users (a count).
QUERIES = {
    "cpu": '1 - avg by (role, instance) (rate(node_cpu_seconds_total{mode="idle"}[%(window)s]))',
    "memory": "1 - sum by (role, instance) (node_memory_MemAvailable_bytes)"
              " / sum by (role, instance) (node_memory_MemTotal_bytes)",
    "load": "sum by (role, instance) (node_load1) / count by (role, instance)"
            ' (node_cpu_seconds_total{mode="idle"})',
    "disk": "max by (role, instance) (1 - node_filesystem_avail_bytes{mountpoint=~\"%(mount)s\"}"
            " / node_filesystem_size_bytes{mountpoint=~\"%(mount)s\"})",
}
# The mount points of the data volumes (lib.hosts.volumes): "disk" is the fullest data
# filesystem of a host. A host without a mounted data volume has no such series, rather than
# reporting its root disk. PromQL anchors =~ at both ends.
DATA_MOUNTS = volumes.data_mounts_regex()
TIMEOUT = 10.0


def queries(users_query=None, data_mounts=DATA_MOUNTS, window="2m"):
    """{metric: PromQL}; `users` only when the operator configured a query for it. `window`:
    the range CPU rates are taken over; Prometheus needs that much history for a full rate."""
    result = {name: text % {"mount": data_mounts, "window": window} if "%(" in text else text
              for name, text in QUERIES.items()}
    if users_query:
        result["users"] = users_query
    return result


class PrometheusSource(object):
    """fetch() -> {metric: {role: {instance: value}}}; ProviderError when Prometheus cannot
    answer. `session` is a requests.Session (injected by tests and benchmarks)."""

    def __init__(self, url, users_query=None, data_mounts=DATA_MOUNTS, session=None,
                 timeout=TIMEOUT, window="2m"):
        self.url = url.rstrip("/")
        self.queries = queries(users_query, data_mounts, window)
        self.session = session or requests.Session()
        self.timeout = timeout
        self.requests = 0

    def query(self, promql):
        self.requests += 1
        try:
            response = self.session.get(self.url + "/api/v1/query", params={"query": promql},
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise ProviderError("prometheus at %s: %s" % (self.url, exc.__class__.__name__)) \
                from None
        if response.status_code != 200:
            raise ProviderError("prometheus at %s answered HTTP %d"
                                % (self.url, response.status_code))
        try:
            body = response.json()
        except ValueError:
            raise ProviderError("prometheus at %s answered something other than JSON"
                                % self.url) from None
        return self._result(body)

    def _unexpected(self, what):
        return ProviderError("prometheus at %s answered an unexpected shape: %s (expected "
                             "the /api/v1/query envelope with a vector result)" % (self.url, what))

    def _result(self, body):
        """The series of an instant vector answer: {"status": "success", "data": {"resultType":
        "vector", "result": [{"metric": {...}, "value": [<time>, "<number>"]}, ...]}}
        (prometheus.io/docs/prometheus/latest/querying/api/#instant-vectors). Anything else
        is a ProviderError, as a proxy's error page or a different API would give."""
        if not isinstance(body, dict):
            raise self._unexpected("a JSON %s body" % type(body).__name__)
        if body.get("status") != "success":
            raise ProviderError("prometheus at %s: %s" % (self.url, body.get("error")))
        data = body.get("data")
        if not isinstance(data, dict):
            raise self._unexpected("no data object" if data is None else
                                   "data is a JSON %s" % type(data).__name__)
        if data.get("resultType") != "vector":
            # A query that is not an instant vector (a scalar, a matrix) is not one of ours.
            raise self._unexpected("resultType %r" % (data.get("resultType"),))
        result = data.get("result")
        if not isinstance(result, list) or not all(isinstance(s, dict) for s in result):
            raise self._unexpected("result is not a list of series")
        return result

    def _sample(self, series):
        """(labels, value) of one series; value None for NaN and infinities, which Prometheus
        returns as "NaN" / "+Inf" when a rate has too few samples or a size is zero."""
        labels, sample = series.get("metric"), series.get("value")
        if not isinstance(labels, dict) or not isinstance(sample, list) or len(sample) != 2 \
                or not isinstance(sample[1], str):
            raise self._unexpected("a series %s" % json.dumps(series, sort_keys=True)[:200])
        try:
            value = float(sample[1])
        except ValueError:
            raise self._unexpected("the value %r is not a number" % sample[1][:40]) from None
        return labels, value if math.isfinite(value) else None

    def fetch(self):
        metrics = {}
        for name, promql in self.queries.items():
            by_role = metrics.setdefault(name, {})
            for series in self.query(promql):
                labels, value = self._sample(series)
                if value is None:
                    continue
                role = labels.get("role") or "unknown"
                by_role.setdefault(role, {})[labels.get("instance") or "?"] = value
        return metrics
