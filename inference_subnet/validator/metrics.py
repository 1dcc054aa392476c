"""Every Prometheus metric of the validator services, in one registry.

One module so names and labels stay consistent across services and so ``/metrics`` of a process that runs
several services (``validator run``) shows all of them once. Label values are bounded sets (task names,
outcomes, service names); miner identities never become labels, so 256 miners cannot blow up cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference_subnet import telemetry

REGISTRY = CollectorRegistry(auto_describe=True)
COMMON = telemetry.ComponentMetrics(REGISTRY, "validator")
"""Build info, Redis and metagraph gauges, and the HTTP traffic of the services' own APIs."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SCORE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# -- services ------------------------------------------------------------------------------------------
service_up = Gauge("isn_service_up", "1 while a service loop runs, 0 after it stopped.", ["service"],
                   registry=REGISTRY)
service_restarts = Counter("isn_service_restarts_total", "Service loops restarted after an error.",
                           ["service"], registry=REGISTRY)
service_errors = Counter("isn_service_errors_total", "Errors a service loop survived, by kind.",
                         ["service", "kind"], registry=REGISTRY)

# -- miner calls (orchestrator, gateway) ----------------------------------------------------------------
miner_requests = Counter("isn_miner_requests_total", "Calls to miners by task, kind and outcome.",
                         ["task", "kind", "outcome"], registry=REGISTRY)
miner_latency = Histogram("isn_miner_request_seconds", "Latency of miner calls.", ["task", "kind"],
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)

# -- canaries -------------------------------------------------------------------------------------------
canaries_planted = Counter("isn_canaries_planted_total", "Fresh synthetic challenges planted as canaries.",
                           ["task"], registry=REGISTRY)
canary_caught = Counter(
    "isn_canary_caught_total",
    "Canary hits: organic requests equal to a live challenge, refused at the gateway (kind=organic), and "
    "answers of miners on a canary bench scored 0 (kind=synthetic).",
    ["task", "kind"], registry=REGISTRY,
)

# -- quotas ---------------------------------------------------------------------------------------------
quota_decisions = Counter("isn_quota_decisions_total", "Quota consumption decisions (granted or refused).",
                          ["task", "kind", "decision"], registry=REGISTRY)
capacity_refreshes = Counter("isn_capacity_refreshes_total", "Miner /capacity reads by outcome.",
                             ["outcome"], registry=REGISTRY)

# -- synthetic rounds -----------------------------------------------------------------------------------
rounds = Counter("isn_rounds_total", "Synthetic rounds by outcome.", ["task", "outcome"], registry=REGISTRY)
round_seconds = Histogram("isn_round_seconds", "Wall time of one synthetic round.", ["task"],
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)
synthetic_requests = Counter("isn_synthetic_requests_total", "Synthetic requests by source (fresh/organic).",
                             ["task", "source"], registry=REGISTRY)
organic_recorded = Counter("isn_organic_recorded_total", "Organic requests recorded for reuse.", ["task"],
                           registry=REGISTRY)

# -- scores ---------------------------------------------------------------------------------------------
responses_admitted = Counter("isn_responses_admitted_total", "Responses sent for scoring after dropout.",
                             ["task", "kind"], registry=REGISTRY)
responses_dropped = Counter("isn_responses_dropped_total", "Responses dropped by dropout (not scored).",
                            ["task", "kind"], registry=REGISTRY)
scores = Histogram("isn_scores", "Scores recorded per response.", ["task", "kind"], buckets=_SCORE_BUCKETS,
                   registry=REGISTRY)
scoring_jobs = Counter("isn_scoring_jobs_total", "Scoring jobs by outcome (scored, duplicate, failed, dead).",
                       ["outcome"], registry=REGISTRY)
scoring_job_seconds = Histogram("isn_scoring_job_seconds", "Time to score and record one job.", ["task"],
                                buckets=_LATENCY_BUCKETS, registry=REGISTRY)
scoring_queue_depth = Gauge("isn_scoring_queue_depth", "Scoring jobs in the stream (new and pending).",
                            registry=REGISTRY)
scoring_pending = Gauge("isn_scoring_pending", "Scoring jobs delivered but not yet acknowledged.",
                        registry=REGISTRY)
scoring_dead = Gauge("isn_scoring_dead", "Scoring jobs set aside after too many attempts.", registry=REGISTRY)
scoring_claimed = Counter("isn_scoring_claimed_total", "Pending jobs taken over from idle workers.",
                          registry=REGISTRY)

# -- metagraph ------------------------------------------------------------------------------------------
metagraph_block = Gauge("isn_metagraph_block", "Block of the metagraph snapshot in Redis.", registry=REGISTRY)
metagraph_neurons = Gauge("isn_metagraph_neurons", "Neurons in the metagraph snapshot.", registry=REGISTRY)
metagraph_syncs = Counter("isn_metagraph_syncs_total", "Metagraph reads from the chain by outcome.",
                          ["outcome"], registry=REGISTRY)
metagraph_pruned = Counter("isn_metagraph_prunes_total", "Score prunes after a metagraph change.",
                           registry=REGISTRY)

# -- weights --------------------------------------------------------------------------------------------
weight_sets = Counter("isn_weight_sets_total", "Weight-set attempts by outcome.", ["outcome"],
                      registry=REGISTRY)
last_weight_set_block = Gauge("isn_last_weight_set_block", "Block of the last successful weight set.",
                              registry=REGISTRY)
blocks_since_weight_set = Gauge(
    "isn_blocks_since_last_weight_set",
    "Blocks since the last successful weight set (since start when none yet): the alert to watch.",
    registry=REGISTRY,
)
weights_nonzero = Gauge("isn_weights_nonzero", "Uids given a non-zero weight in the last set.",
                        registry=REGISTRY)


ORGANIC = ("isn_miner_requests_total", "isn_miner_request_seconds", "isn_responses_admitted_total",
           "isn_organic_recorded_total")
"""The families the gateway also feeds (organic calls, admissions, recordings): its ``/metrics`` shows them
beside its own, and none of the services' other families, which a gateway never moves."""


def render() -> tuple[bytes, str]:
    """The exposition body and its content type."""
    return telemetry.render(REGISTRY)
