"""Small models shared on the wire by miners, validators and the gateway."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable code and a human reason."""

    error: str = Field(description="Short machine-readable code, e.g. `unauthorized`.")
    reason: str = Field(description="What went wrong, safe to show the caller.")


class CapacityInfo(BaseModel):
    """A miner's answer to ``GET /capacity``."""

    hotkey: str
    capacities: dict[str, int] = Field(description="Requests per epoch the miner accepts, per task.")
    epoch_seconds: float
    burst_seconds: float | None = Field(
        None, gt=0, description="Seconds of a validator's guaranteed rate the miner admits at once (its pace's "
        "burst); validators pace with no larger a burst, so that what they take for guaranteed is. Absent from "
        "older miners.",
    )


QUOTA_REASON_HEADER = b"x-quota-reason"
"""Header of a miner's 429 saying why: ``beyond_share`` (the caller was past its guaranteed pace and nothing
could be lent: expected back-pressure) or ``capacity`` (the miner's epoch capacity is used up)."""
