"""The `managing` service logic: stake-based quotas, score history with hybrid aggregation and dropout,
miner sampling.

The decisions are pure functions (:mod:`inference_subnet.protocol.quota_math`, shared with the miner;:mod:`.score_math`, :mod:`.sampling`); the Redis
side (:class:`QuotaBook`, :class:`ScoreBook`) only stores, and makes each check-and-count one Lua call.
"""

from inference_subnet.protocol.quota_math import (
    permitted_stakes,
    split_capacity,
    stake_fractions,
    synthetic_limit,
)
from inference_subnet.validator.managing.quotas import QuotaBook, QuotaStatus, Remaining
from inference_subnet.validator.managing.sampling import (
    OrganicCandidate,
    SyntheticCandidate,
    rank_organic,
    sample_synthetic,
)
from inference_subnet.validator.managing.score_math import Sample, aggregate
from inference_subnet.validator.managing.scores import ScoreBook

__all__ = [
    "OrganicCandidate",
    "QuotaBook",
    "QuotaStatus",
    "Remaining",
    "Sample",
    "ScoreBook",
    "SyntheticCandidate",
    "aggregate",
    "permitted_stakes",
    "rank_organic",
    "sample_synthetic",
    "split_capacity",
    "stake_fractions",
    "synthetic_limit",
]
