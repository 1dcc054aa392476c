"""Every Prometheus metric of the gateway, in its own registry.

The gateway's ``/metrics`` shows these, the shared families (:mod:`inference_subnet.telemetry`) and the
validator families it feeds with organic traffic (:data:`inference_subnet.validator.metrics.ORGANIC`).
Labels are bounded: task names, refusal reasons, outcomes, and miner uids, which come from the metagraph
(never from a client) and are bounded by the subnet's size. With ``--workers N`` every value lives in the
shared multiprocess directory (:mod:`inference_subnet.telemetry`) and a scrape sums the workers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference_subnet import telemetry
from inference_subnet.validator import metrics as validator_metrics

REGISTRY = CollectorRegistry(auto_describe=True)
COMMON = telemetry.ComponentMetrics(REGISTRY, "gateway")

_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

auth_refusals = Counter("isn_gateway_auth_refusals_total",
                        "Requests refused for their API key (401), by reason.", ["reason"], registry=REGISTRY)
rate_limited = Counter("isn_gateway_rate_limited_total",
                       "Requests refused with 429 by the API key's limits, by task and reason (rate, "
                       "concurrency).", ["task", "reason"], registry=REGISTRY)
no_miner = Counter("isn_gateway_no_miner_total", "Requests answered 503 because no miner could serve them.",
                   ["task"], registry=REGISTRY)
upstream_requests = Counter("isn_gateway_upstream_requests_total",
                            "Organic calls to miners, by task, miner uid and outcome.",
                            ["task", "uid", "outcome"], registry=REGISTRY)
upstream_seconds = Histogram("isn_gateway_upstream_seconds",
                             "Latency of organic calls to miners (whole answer or whole stream), by task and "
                             "uid.", ["task", "uid"], buckets=_UPSTREAM_BUCKETS, registry=REGISTRY)
upstream_first_byte = Histogram("isn_gateway_upstream_first_byte_seconds",
                                "Streams: time from calling the miner that served to its first chunk, by "
                                "task.", ["task"], buckets=telemetry.LATENCY_BUCKETS, registry=REGISTRY)
request_log_pending = Gauge("isn_gateway_request_log_pending", "Request log rows waiting to be written.",
                            registry=REGISTRY)
request_log_dropped = Counter("isn_gateway_request_log_dropped_total",
                              "Request log rows dropped because the queue was full.", registry=REGISTRY)

_ORGANIC = validator_metrics.REGISTRY.restricted_registry(validator_metrics.ORGANIC)


def render() -> tuple[bytes, str]:
    """The exposition body and its content type: every worker's values when there are several
    (``gateway run --workers N``)."""
    return telemetry.render(REGISTRY, _ORGANIC, shared=True)
