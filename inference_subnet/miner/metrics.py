"""Every Prometheus metric of the miner, in its own registry.

With several uvicorn workers (``--workers N``) every value lives in the shared multiprocess directory the
supervisor made (:mod:`inference_subnet.telemetry`), and :func:`render` sums the workers. Labels are the
miner's own task names and the refusal codes it sends back: nothing a caller picks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from inference_subnet import telemetry

REGISTRY = CollectorRegistry(auto_describe=True)
COMMON = telemetry.ComponentMetrics(REGISTRY, "miner")

auth_refusals = Counter(
    "isn_miner_auth_refusals_total",
    "Task requests refused before the handler for who sent them: 403 from the metagraph (not_registered, "
    "no_validator_permit, low_stake) or 401 from btauth/1 (malformed_auth, wrong_receiver, stale_request, "
    "replayed_request, bad_signature), by task and reason.",
    ["task", "reason"], registry=REGISTRY)
quota_refusals = Counter(
    "isn_miner_quota_refusals_total",
    "Task requests refused with 429: the caller's stake-based quota is used up.",
    ["task"], registry=REGISTRY)
unavailable = Counter(
    "isn_miner_unavailable_total",
    "Task requests refused with 503 for want of a metagraph (metagraph_unavailable) or of Redis "
    "(store_unavailable), by task and reason.",
    ["task", "reason"], registry=REGISTRY)


def render() -> tuple[bytes, str]:
    """The exposition body and its content type: every worker's values when there are several."""
    return telemetry.render(REGISTRY, shared=True)
