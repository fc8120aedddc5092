"""Host metrics of a deployment from Prometheus' HTTP API: one instant query per metric.

Each query aggregates by (role, instance) on the Prometheus side, so a poll costs one request
per metric however many hosts there are. The `role` label comes from the scrape configuration
the deploy renders on the web host (templates/prometheus.yml.j2); any Prometheus whose node
targets carry it works.
"""

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
        if body.get("status") != "success":
            raise ProviderError("prometheus at %s: %s" % (self.url, body.get("error")))
        return body["data"]["result"]

    def fetch(self):
        metrics = {}
        for name, promql in self.queries.items():
            by_role = metrics.setdefault(name, {})
            for series in self.query(promql):
                labels = series.get("metric") or {}
                try:
                    value = float(series["value"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
                if value != value:  # NaN: no samples in the range yet
                    continue
                role = labels.get("role") or "unknown"
                by_role.setdefault(role, {})[labels.get("instance") or "?"] = value
        return metrics
