"""The headline figures of a run, read from its rows. Pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from inference_subnet.simulate.metrics import epochs_until_stable, jain_index, kendall_tau
from inference_subnet.simulate.results import MinerRow, SimulationResult, ValidatorRow

TOP_VALIDATORS = 5


def summarise(result: SimulationResult, *, stable_tau: float, classes: Sequence[str]) -> dict[str, Any]:
    validators = sorted(result.validators, key=lambda v: -v.stake)
    miners = result.miners
    pinned = [v for v in validators if v.entitled_share > v.stake_share]
    top = validators[:TOP_VALIDATORS]
    rest = validators[TOP_VALIDATORS:]
    taus = [e.tau_previous for e in result.epochs]
    second_half = result.epochs[len(result.epochs) // 2 :]
    uid_share = {c: sum(1 for m in miners if m.behaviour == c) / len(miners) for c in classes}
    mean_share = {c: statistics.fmean(e.class_incentive.get(c, 0.0) for e in second_half) for c in classes}
    honest_per_uid = mean_share["honest"] / uid_share["honest"] if uid_share["honest"] else 0.0
    scored_hours = [v.scored_per_hour for v in result.validators]
    over = [m for m in miners if m.max_load_ratio > 1.0 + 1e-12]
    honest = [m for m in miners if m.behaviour == "honest"]
    final = result.epochs[-1]
    return {
        "fairness": {
            "jain_delivered_vs_stake": jain_index([v.delivered_share / v.stake_share for v in validators]),
            "jain_delivered_vs_entitled": jain_index(
                [v.delivered_share / v.entitled_share for v in validators]
            ),
            # Delivered against what each validator could fairly claim: its demand, up to its entitlement.
            # Served beyond it (borrowed idle capacity) counts as 1: it is no one's loss.
            "jain_delivered_vs_fair": jain_index(
                [min(1.0, (v.synthetic + v.organic_ok) / fair) for v in validators if (fair := _fair(v)) > 0]
            ),
            "validators_at_floor": len(pinned),
            "floor_stake_share": math.fsum(v.stake_share for v in pinned),
            "floor_entitled_share": math.fsum(v.entitled_share for v in pinned),
            "largest": {
                "stake_share": validators[0].stake_share,
                "entitled_share": validators[0].entitled_share,
                "delivered_share": validators[0].delivered_share,
            },
            "organic_met_top": _ratio(sum(v.organic_ok for v in top), sum(v.organic_demand for v in top)),
            "organic_met_rest": _ratio(sum(v.organic_ok for v in rest), sum(v.organic_demand for v in rest)),
            "entitlement_used_top": _ratio(
                sum(v.synthetic + v.organic for v in top),
                sum((v.synthetic + v.organic) / v.entitlement_used for v in top if v.entitlement_used),
            ),
            "entitlement_used_rest": _ratio(
                sum(v.synthetic + v.organic for v in rest),
                sum((v.synthetic + v.organic) / v.entitlement_used for v in rest if v.entitlement_used),
            ),
        },
        "load": {
            "miners_over_capacity": len(over),
            "max_load_ratio": max((m.max_load_ratio for m in miners), default=0.0),
            "capacity_used": _ratio(
                sum(e.synthetic_delivered + e.organic_delivered for e in result.epochs),
                sum(e.capacity for e in result.epochs),
            ),
            "idle_while_refused": _ratio(result.idle_while_refused, sum(e.capacity for e in result.epochs)),
            "max_step_burst": max((m.max_step_burst for m in miners), default=0.0),
            "median_step_burst": statistics.median(m.max_step_burst for m in miners),
            "guard_slack_max": max(((m.guard_allows - m.declared) / m.declared for m in miners), default=0.0),
            "sybil_backend_max_load": max((b.max_load_ratio for b in result.sybil_backends), default=0.0),
            "sybil_overloaded_answers": sum(b.overloaded for b in result.sybil_backends),
            "lua_refusals": result.lua_refusals,
            "miner_refusals": result.miner_refusals,
            "guaranteed_refusals": result.guaranteed_refusals,
            "borrowed": result.borrowed,
            "validator_side_mismatches": result.validator_side_mismatches,
        },
        "ranking": {
            "epochs_until_stable": epochs_until_stable(taus, stable_tau),
            "stable_tau": stable_tau,
            "final_tau_previous": final.tau_previous,
            "final_tau_truth": final.tau_truth,
            # 0 when a miner's score error has nothing to do with how much capacity it declared.
            "capacity_bias_tau": kendall_tau(
                [m.final_score - m.true_value for m in honest], [float(m.declared) for m in honest]
            ),
        },
        "adversarial": {
            "uid_share": uid_share,
            "incentive_share_final": dict(final.class_incentive),
            "incentive_share_second_half": mean_share,
            "per_uid_vs_honest": {
                c: (mean_share[c] / uid_share[c] / honest_per_uid)
                if uid_share[c] and honest_per_uid
                else None
                for c in classes
            },
            # What one sybil machine earns, in honest uids' worth (a machine behind one uid earns about 1).
            "sybil_machine_vs_honest_uid": (
                mean_share["sybil"] / len(result.sybil_backends) / (honest_per_uid / len(miners))
                if result.sybil_backends and honest_per_uid
                else None
            ),
            # What one sybil machine earns behind k uids against the same machine behind one uid (its twin)
            # in the same run, over the second half: about 1 when splitting a machine gains nothing.
            "sybil_machine_vs_single_uid": (
                mean_share["sybil"] / mean_share["twin"]
                if mean_share.get("twin") and "sybil" in mean_share
                else None
            ),
            # What copycats earn against the miners they copy (final epoch).
            "copycat_vs_source": _copycat_vs_source(miners),
        },
        "defenses": dict(result.defenses),
        "organic": {
            "answered": result.organic_answered,
            # Answers a user got that were wrong (quality under 0.5), of all the answers users got.
            "bad_answer_share": _ratio(result.organic_bad_answers, result.organic_answered),
        },
        "cost": {
            "scored_per_hour_mean": statistics.fmean(scored_hours),
            "scored_per_hour_max": max(scored_hours),
            "scored_per_hour_median": statistics.median(scored_hours),
            "scored_per_hour_min": min(scored_hours),
            "scored_per_hour_all": math.fsum(scored_hours),
            "scored_share": _ratio(
                sum(v.scored for v in result.validators),
                sum(v.unscored + v.scored for v in result.validators),
            ),
            "capped_share": _ratio(
                sum(v.capped for v in result.validators),
                sum(v.unscored + v.scored for v in result.validators),
            ),
        },
    }


def _fair(v: ValidatorRow) -> float:
    """What a validator could fairly have been served: what it asked for (its synthetic traffic and its organic
    demand), but no more than its entitlement (requests delivered / share of the entitlement used). Set against
    the synthetic requests and organic requests answered, a validator whose demand was met scores 1."""
    delivered = v.synthetic + v.organic
    entitlement = delivered / v.entitlement_used if v.entitlement_used else 0.0
    return min(v.synthetic + v.organic_demand, entitlement)


def _copycat_vs_source(miners: Sequence[MinerRow]) -> float | None:
    """What a copycat uid earns against the miners whose answers it copied (final epoch): its incentive over
    the mean incentive of the miners that answered its forwards, weighted by how many each answered."""
    by_uid = {m.uid: m for m in miners}
    copied = 0.0
    sources = 0.0
    for m in miners:
        if m.behaviour != "copycat":
            continue
        weights = {int(uid): n for uid, n in m.copied.items() if int(uid) in by_uid}
        total = sum(weights.values())
        if not total:
            continue
        copied += m.final_incentive
        sources += math.fsum(by_uid[u].final_incentive * n for u, n in weights.items()) / total
    return copied / sources if sources else None


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
