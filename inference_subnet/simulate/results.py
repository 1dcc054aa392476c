"""The JSON shape of a simulation run: per epoch, per validator, per miner, and the summary read from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class EpochRow(BaseModel):
    epoch: int
    hour: float = Field(description="Simulated hour of day at the epoch's start.")
    demand_factor: float = Field(description="Mean of the daily curve over the epoch (1 = the daily peak).")
    organic_demand: int
    organic_delivered: int = Field(description="Organic attempts miners accepted (retries included).")
    organic_ok: int = Field(description="Organic requests answered well.")
    synthetic_delivered: int
    scored: int
    unscored: int = Field(description="Responses not scored (organic sampling and the dropout cap).")
    capacity: int = Field(description="Sum of every miner's declared capacity for one epoch.")
    max_load_ratio: float = Field(description="Largest load / declared capacity of any miner in the epoch.")
    validators_with_weights: int
    class_incentive: dict[str, float] = Field(description="Consensus incentive captured by each class.")
    class_raw_weight: dict[str, float] = Field(
        description="Stake-weighted mean weight (before consensus) by class."
    )
    tau_previous: float | None = Field(
        description="Kendall tau of the honest ranking against the previous epoch."
    )
    tau_truth: float = Field(description="Kendall tau of the honest ranking against the miners' true value.")
    honest_incentive: dict[str, float] = Field(
        description="Incentive of every honest miner (identity -> share)."
    )


class ValidatorRow(BaseModel):
    uid: int
    hotkey: str
    stake: float
    stake_share: float
    entitled_share: float = Field(
        description="Its fraction of every miner's capacity: stake share with the floor."
    )
    demand_share: float = Field(description="Its share of all organic demand.")
    delivered_share: float = Field(description="Its share of every request miners served.")
    synthetic: int
    organic: int
    organic_ok: int
    organic_demand: int
    organic_unplaced: int = Field(description="Organic requests it had no quota left anywhere for.")
    entitlement_used: float = Field(description="Requests delivered / the quota it was entitled to.")
    scored: int
    unscored: int = Field(description="Responses not scored (organic sampling and the dropout cap).")
    capped: int = Field(description="Responses the dropout cap turned away.")
    scored_per_hour: float
    epochs_with_weights: int


class MinerRow(BaseModel):
    uid: int
    hotkey: str
    behaviour: str
    backend: str
    source: str | None = Field(None, description="Unused by the built-in classes.")
    copied: dict[str, int] = Field(
        default_factory=dict,
        description="A copycat's forwarded requests, by the uid of the miner that answered them.",
    )
    declared: int = Field(description="Capacity per epoch it declared.")
    max_epoch_load: int
    max_load_ratio: float = Field(description="Largest epoch load / declared capacity (must stay <= 1).")
    max_step_burst: float = Field(description="Largest one-step load / the declared capacity spread evenly.")
    served: int
    ok: int
    guard_allows: int = Field(description="Requests per epoch its own guard would let all validators make.")
    true_value: float = Field(description="Expected sample value of its answers (the yardstick).")
    final_score: float = Field(description="Stake-weighted mean of the validators' aggregates at the end.")
    final_incentive: float


class BackendRow(BaseModel):
    """A sybil backend: one machine behind several uids."""

    name: str
    capacity: int
    uids: int
    declared_total: int
    max_load_ratio: float
    overloaded: int = Field(
        description="Answers that timed out because the backend was past its real capacity."
    )


class SimulationResult(BaseModel):
    scenario: dict[str, Any]
    settings: dict[str, Any]
    seconds: float = Field(description="Wall-clock time of the run.")
    simulated_hours: float
    epochs: list[EpochRow]
    validators: list[ValidatorRow]
    miners: list[MinerRow]
    sybil_backends: list[BackendRow]
    lua_refusals: int = Field(
        description="Planned calls the quota script refused (the plan and Redis disagree)."
    )
    miner_refusals: int = Field(description="Calls a miner's own guard refused (429).")
    guaranteed_refusals: int = Field(
        0, description="Calls within the caller's guaranteed pace a miner refused (0 when both sides agree)."
    )
    borrowed: int = Field(0, description="Calls a miner admitted as borrowed, beyond the caller's guaranteed pace.")
    validator_side_mismatches: int = Field(
        description="Per-epoch use read back from Redis unlike the plan's."
    )
    idle_while_refused: float = Field(
        0.0,
        description="Requests of capacity left idle in steps where a validator could place organic demand "
        "nowhere, or had every attempt refused for quota (only miners its quality bar lets serve users "
        "count).",
    )
    organic_answered: int = Field(0, description="Organic requests that got an answer.")
    organic_bad_answers: int = Field(0, description="Of those, answers scoring under 0.5.")
    defenses: dict[str, int] = Field(
        default_factory=dict,
        description="Copycat forwards, forwards served, canary flags and churned registrations.",
    )
    summary: dict[str, Any] = Field(default_factory=dict)
