"""The JSON report of a local subnet run: what was set on chain, how miners ranked, what was served."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MinerRow(BaseModel):
    uid: int
    hotkey: str
    behaviour: str
    port: int
    score: float = Field(description="The validator's aggregate score at the end.")
    weight: float = Field(description="Weight read back from the chain at the end.")
    synthetic_calls: int = 0
    organic_served: int = 0


class WeightSet(BaseModel):
    block: int
    outcome: str
    path: str | None = None
    error: str | None = None


class LocalnetReport(BaseModel):
    chain: str = Field(description="`real` (a subtensor runtime at `chain_url`) or `memory`.")
    chain_url: str | None = None
    netuid: int
    validator_hotkey: str
    setup_seconds: float = Field(description="Registering the subnet and starting every process.")
    duration_seconds: float = Field(description="Time the subnet ran after set-up.")
    blocks: int = Field(description="Blocks the local subnet built while it ran.")
    head_block: int
    rounds: int
    organic_requests: int
    organic_ok: int
    seconds_to_first_weights: float | None = Field(description="From the command's start to the first weights set.")
    weights_on_chain: dict[str, float] = Field(description="hotkey -> weight, read back from chain storage.")
    weight_sets: list[WeightSet]
    miners: list[MinerRow]
    verdict_ok: bool
    verdict: str
    crashed: list[str] = Field(description="Processes or services that died during the run.")
