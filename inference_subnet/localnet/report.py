"""The JSON report of a local subnet run: how to reach it, what was set on chain, how miners ranked, what
was served."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MinerRow(BaseModel):
    name: str = Field(description="`miner-N`: its wallet, and its log file in the workdir.")
    uid: int
    hotkey: str
    behaviour: str
    port: int
    score: float = Field(description="The validator's aggregate score at the end.")
    weight: float = Field(description="Weight read back from the chain at the end.")
    synthetic_calls: int = Field(0, description="Synthetic requests the orchestrator sent it during the run.")
    organic_served: int = Field(0, description="Organic requests through the gateway it answered (HTTP 200).")
    organic_bad: int = Field(0, description="Of those, answers the task's scorer graded under 0.5.")
    log_file: str | None = Field(None, description="Its whole output (rotated at 5 MB, one previous file kept).")
    first_error: str | None = Field(
        None, description="The first error it logged, message and exception on one line (a handler that raised).")


class WeightSet(BaseModel):
    block: int
    outcome: str
    path: str | None = None
    error: str | None = None


class Access(BaseModel):
    """Where the running subnet answers, and a key to call it with."""

    gateway_url: str
    dashboard_url: str | None = Field(description="The validator dashboard; null when `gateway.dashboard` is off.")
    docs_url: str = Field(description="The gateway's interactive API docs (Swagger UI, served offline).")
    api_key: str = Field(description="A gateway API key created for this run; the database dies with the run.")


class LocalnetReport(BaseModel):
    chain: str = Field(description="`real` (a subtensor runtime at `chain_url`) or `memory`.")
    chain_url: str | None = None
    netuid: int
    validator_hotkey: str
    access: Access
    setup_seconds: float = Field(description="Registering the subnet and starting every process.")
    duration_seconds: float = Field(description="Time the subnet ran after set-up.")
    start_block: int = Field(description="Head block when the subnet started running (after set-up).")
    head_block: int = Field(description="Head block at the end.")
    blocks: int = Field(description="`head_block` - `start_block`: blocks the chain advanced while the subnet ran "
                                    "(the block clock's, and on the in-memory chain one per extrinsic).")
    rounds: int
    organic_requests: int
    organic_ok: int = Field(description="Organic requests answered (HTTP 200).")
    organic_good: int = Field(description="Of those, answers the task's scorer graded 0.5 or more.")
    seconds_to_first_weights: float | None = Field(description="From the command's start to the first weights set.")
    weights_on_chain: dict[str, float] = Field(description="hotkey -> weight, read back from chain storage.")
    weight_sets: list[WeightSet]
    miners: list[MinerRow]
    verdict_ok: bool
    verdict: str
    crashed: list[str] = Field(description="Processes or services that died during the run.")
    scoring_error: str | None = Field(
        None, description="The first scoring failure (`task: Exception: reason`: the task's scorer raised).")


def blocks_text(head_block: int, start_block: int) -> str:
    """The block count as every line of the run says it (live view, status lines, summary): the head and how
    far it moved since the subnet started running."""
    return f"head block {head_block} (+{head_block - start_block} in this run)"


def access_lines(access: Access, example: tuple[str, str] | None = None) -> list[str]:
    """How to reach the subnet, one line each. ``example`` is (task, request JSON) for a curl line; left out
    when the JSON is long or would need shell quoting."""
    lines = [f"gateway    {access.gateway_url}"]
    if access.dashboard_url:
        lines.append(f"dashboard  {access.dashboard_url}")
    lines += [f"API docs   {access.docs_url}", f"API key    {access.api_key}"]
    if example is not None and len(example[1]) <= 200 and "'" not in example[1]:
        task, body = example
        lines.append(f"try        curl -H 'Authorization: Bearer {access.api_key}' "
                     f"-H 'Content-Type: application/json' -d '{body}' {access.gateway_url}/v1/tasks/{task}")
    return lines
