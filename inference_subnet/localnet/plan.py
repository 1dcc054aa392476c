"""What a local subnet consists of, and how its outcome is judged. Pure: no processes, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference_subnet.protocol.behaviours import BEHAVIOURS, HONEST

FAULTY = tuple(b for b in BEHAVIOURS if b != HONEST)
_MIX = (HONEST, "wrong", HONEST, "slow", "flaky", "garbage")
"""The order behaviours are handed out in: two honest miners first, then every faulty kind."""


@dataclass(frozen=True)
class MinerPlan:
    """One local miner: a dev hotkey, a port, a behaviour."""

    index: int
    hotkey_name: str
    port: int
    behaviour: str

    @property
    def honest(self) -> bool:
        return self.behaviour == HONEST


def plan_miners(ports: Sequence[int], behaviours: Sequence[str] | None = None) -> list[MinerPlan]:
    """One miner per port, with a mix of honest and faulty behaviours.

    With ``behaviours`` given they are used in turn; otherwise the mix starts honest, wrong, honest, slow,
    so that any count from 2 has honest and faulty miners to compare.
    """
    if not ports:
        raise ValueError("a local subnet needs at least one miner")
    mix = tuple(behaviours) if behaviours else _MIX
    unknown = sorted(set(mix) - set(BEHAVIOURS))
    if unknown:
        raise ValueError(f"unknown behaviour(s) {', '.join(unknown)}; choose from {', '.join(BEHAVIOURS)}")
    return [
        MinerPlan(index=i, hotkey_name=f"miner-{i}", port=port, behaviour=mix[i % len(mix)])
        for i, port in enumerate(ports)
    ]


@dataclass(frozen=True)
class Verdict:
    """Whether the subnet ranked its miners as it should."""

    ok: bool
    reason: str
    lowest_honest: float | None
    highest_faulty: float | None


def judge(weights_by_hotkey: Mapping[str, float], miners: Sequence[MinerPlan], hotkeys: Mapping[int, str]) -> Verdict:
    """Honest miners must all end with more weight than every faulty one.

    ``hotkeys`` maps a plan index to the miner's ss58 hotkey; a miner with no weight counts as 0.
    """
    honest = [weights_by_hotkey.get(hotkeys[m.index], 0.0) for m in miners if m.honest]
    faulty = [weights_by_hotkey.get(hotkeys[m.index], 0.0) for m in miners if not m.honest]
    if not honest or not faulty:
        return Verdict(False, "needs at least one honest and one faulty miner to compare", None, None)
    low, high = min(honest), max(faulty)
    if sum(weights_by_hotkey.values()) <= 0:
        return Verdict(False, "no weights were set", low, high)
    if low > high:
        return Verdict(True, f"every honest miner ({low:.3f}+) outweighs every faulty one (<= {high:.3f})", low, high)
    return Verdict(False, f"an honest miner ({low:.3f}) does not outweigh a faulty one ({high:.3f})", low, high)


MAX_FAULTY_ORGANIC = 0.05
"""Share of organic answers faulty miners may give before the verdict fails: users are routed by quality."""


def judge_organic(served_by_uid: Mapping[int, int], faulty_uids: Sequence[int]) -> Verdict:
    """At most :data:`MAX_FAULTY_ORGANIC` of the organic answers may come from faulty miners."""
    total = sum(served_by_uid.values())
    faulty = sum(served_by_uid.get(uid, 0) for uid in faulty_uids)
    if total == 0:
        return Verdict(False, "no organic request was answered", None, None)
    share = faulty / total
    if share <= MAX_FAULTY_ORGANIC:
        return Verdict(True, f"faulty miners answered {faulty} of {total} organic requests", None, None)
    return Verdict(
        False, f"faulty miners answered {faulty} of {total} organic requests ({share:.0%}, over "
        f"{MAX_FAULTY_ORGANIC:.0%})", None, None,
    )
