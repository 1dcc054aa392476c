"""The pure rules of verification by log-probabilities (inference_subnet.scorers.logprobs), without a model:
greedy answers must be the argmax up to a near-tie, sampled answers must be plausible and as surprising as
sampling is, endings must be what they claim, and a server's top-k evidence tempers like the full one."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.scorers.logprobs import (
    TIE_GAP,
    TokenEvidence,
    evidence_from_top,
    is_argmax,
    is_plausible,
    padded,
    replay_agreement,
    replay_score,
    surprisal_z,
    verify,
)


def distribution(logits: list[float], temperature: float) -> list[float]:
    top = max(logits)
    weights = [math.exp((x - top) / temperature) for x in logits]
    total = sum(weights)
    return [w / total for w in weights]


def evidence(probs: list[float], token: int) -> TokenEvidence:
    """The exact evidence for ``token`` under ``probs`` (what the in-process reference computes)."""
    p = probs[token]
    above = [q for q in probs if q > p]
    entropy = -sum(q * math.log(q) for q in probs if q > 0)
    variance = sum(q * math.log(q) ** 2 for q in probs if q > 0) - entropy**2
    return TokenEvidence(math.log(p), len(above) + 1, math.log(max(probs)), sum(above), entropy, variance)


def peaked(rng: random.Random, vocabulary: int = 50) -> list[float]:
    """Logits of a model that knows something: a few tokens likely, a long tail."""
    return [rng.gauss(0, 1) + (6.0 if i < 3 else 0.0) for i in range(vocabulary)]


def sample(rng: random.Random, probs: list[float]) -> int:
    return rng.choices(range(len(probs)), weights=probs)[0]


def sampled_completion(seed: int, n: int, temperature: float, draw: str) -> tuple[list[TokenEvidence], TokenEvidence]:
    rng = random.Random(seed)
    tokens = []
    for _ in range(n):
        probs = distribution(peaked(rng), temperature)
        token = {"sample": sample(rng, probs), "argmax": probs.index(max(probs)),
                 "random": rng.randrange(len(probs))}[draw]
        tokens.append(evidence(probs, token))
    end_probs = distribution(peaked(rng), temperature)
    return tokens, evidence(end_probs, 0)


def test_greedy_counts_argmax_tokens_and_forgives_only_a_near_tie() -> None:
    best = TokenEvidence(-0.5, 1, -0.5, 0.0, 0.0, 0.0)
    near = TokenEvidence(-0.5 - TIE_GAP / 2, 2, -0.5, 0.3, 0.0, 0.0)
    far = TokenEvidence(-3.0, 2, -0.5, 0.6, 0.0, 0.0)
    assert is_argmax(best) and is_argmax(near) and not is_argmax(far)
    one_off = verify([best] * 19 + [far], best, finish_reason="stop", max_tokens=64, temperature=0)
    assert one_off.score == 1.0 and one_off.agreement == 20 / 21  # one flipped token costs nothing
    half = verify([best, far] * 10, best, finish_reason="stop", max_tokens=64, temperature=0)
    assert 0.0 < half.score < 0.5
    assert verify([far] * 10, best, finish_reason="stop", max_tokens=64, temperature=0).score == 0.0


def test_greedy_stop_needs_the_end_to_be_the_argmax_and_length_needs_the_budget_used() -> None:
    best = TokenEvidence(-0.5, 1, -0.5, 0.0, 0.0, 0.0)
    unlikely_end = TokenEvidence(-6.0, 40, -0.5, 0.9, 0.0, 0.0)
    assert verify([best] * 10, unlikely_end, finish_reason="stop", max_tokens=64, temperature=0).score == 0.0
    assert verify([best] * 10, None, finish_reason="length", max_tokens=64, temperature=0).score == 0.0
    assert verify([best] * 64, None, finish_reason="length", max_tokens=64, temperature=0).score == 1.0
    assert verify([best] * 60, None, finish_reason="length", max_tokens=64, temperature=0).score == 1.0


def test_padding_beyond_the_budget_scores_nothing() -> None:
    best = TokenEvidence(-0.5, 1, -0.5, 0.0, 0.0, 0.0)
    assert padded(100, 64) and not padded(64, 64)
    verdict = verify([best] * 100, best, finish_reason="length", max_tokens=64, temperature=0)
    assert verdict.score == 0.0 and "padded" in verdict.reason


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), temperature=st.sampled_from([0.6, 0.8, 1.0, 1.2]))
def test_honest_samples_pass_and_argmax_or_random_text_fails_at_a_temperature(seed: int, temperature: float) -> None:
    n = 48
    honest = verify(*sampled_completion(seed, n, temperature, "sample"), finish_reason="stop", max_tokens=64,
                    temperature=temperature)
    greedy = verify(*sampled_completion(seed, n, temperature, "argmax"), finish_reason="stop", max_tokens=64,
                    temperature=temperature)
    noise = verify(*sampled_completion(seed, n, temperature, "random"), finish_reason="stop", max_tokens=64,
                   temperature=temperature)
    assert abs(honest.z) < 6, honest  # a few in a million honest samples go beyond; hypothesis seeds are fixed
    assert greedy.z < 0 and greedy.score <= 0.4, greedy  # more likely than sampling, and too often the argmax
    assert noise.score <= 0.2, noise


def test_honest_samples_score_high_on_average_and_z_is_standard() -> None:
    verdicts = [verify(*sampled_completion(seed, 48, 0.8, "sample"), finish_reason="stop", max_tokens=64,
                       temperature=0.8) for seed in range(200)]
    zs = [v.z for v in verdicts]
    mean = sum(zs) / len(zs)
    spread = math.sqrt(sum((z - mean) ** 2 for z in zs) / len(zs))
    assert abs(mean) < 0.3 and 0.7 < spread < 1.2, (mean, spread)
    assert sum(v.score for v in verdicts) / len(verdicts) >= 0.95
    greedy = [verify(*sampled_completion(seed, 48, 0.8, "argmax"), finish_reason="stop", max_tokens=64,
                     temperature=0.8) for seed in range(200)]
    assert max(v.score for v in greedy) == 0.0


def test_a_token_outside_the_nucleus_or_the_tail_is_implausible() -> None:
    probs = [0.5, 0.3, 0.15, 0.05]
    assert is_plausible(evidence(probs, 2), top_p=0.9)
    assert not is_plausible(evidence(probs, 3), top_p=0.9)  # 0.95 of the mass lies above it
    assert is_plausible(evidence(probs, 3), top_p=1.0)
    rare = [1 - 1e-6] + [1e-6 / 9] * 9
    assert not is_plausible(evidence(rare, 5))
    assert not is_plausible(TokenEvidence(-math.inf, 9, -0.1, 0.99, 1.0, 1.0))
    assert surprisal_z([TokenEvidence(-math.inf, 9, -0.1, 0.99, 1.0, 1.0)]) == math.inf


def test_an_unknown_finish_reason_or_an_empty_sampled_answer_scores_nothing() -> None:
    best = TokenEvidence(-0.5, 1, -0.5, 0.0, 0.5, 0.5)
    assert verify([best] * 5, best, finish_reason="tool_calls", max_tokens=8, temperature=0.8).score == 0.0
    assert verify([], None, finish_reason="length", max_tokens=8, temperature=0.8).score == 0.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), temperature=st.sampled_from([0.5, 0.8, 1.0]),
       top_p=st.sampled_from([1.0, 0.9]), beyond=st.booleans())
def test_top_k_evidence_is_the_exact_evidence_of_the_distribution_a_server_resolves(
    seed: int, temperature: float, top_p: float, beyond: bool
) -> None:
    """A server gives untempered log-probabilities of the top few tokens. Tempered here, they give the
    token's own probability when it is among them, the rest's as one event when not, and the entropy of
    that coarser distribution (exact when the rest is flat, as in this model)."""
    rng = random.Random(seed)
    vocabulary, k = 200, 20
    head = [rng.gauss(0, 0.5) + (6.0 if i < 4 else 3.0) for i in range(k)]
    raw = [math.log(p) for p in distribution(head + [0.0] * (vocabulary - k), 1.0)]
    token = rng.randrange(k, vocabulary) if beyond else rng.randrange(k)
    rank = sorted(raw, reverse=True).index(raw[token]) + 1
    got = evidence_from_top(raw[token], rank, {i: raw[i] for i in range(k)}, temperature=temperature,
                            vocab_size=vocabulary, top_p=top_p)
    tempered = distribution(raw, temperature)
    events = sorted(tempered[:k], reverse=True) + [sum(tempered[k:])]
    if top_p < 1.0:
        kept, mass = [], 0.0
        for p in events:
            if mass >= top_p:
                break
            kept.append(p)
            mass += p
        events = kept
    norm = sum(events)
    exact_entropy = -sum(p / norm * math.log(p / norm) for p in events)
    own = sum(tempered[k:]) if beyond else tempered[token]
    assert got.rank == rank
    assert math.isclose(got.logprob, math.log(own / norm), abs_tol=1e-9)
    assert math.isclose(got.entropy, exact_entropy, rel_tol=1e-9, abs_tol=1e-9)
    assert got.variance >= 0.0


def test_replay_agreement_counts_the_end_and_needs_the_budget_spent_for_a_length() -> None:
    ends = frozenset({0, 2})
    assert replay_agreement([5, 6, 7], [5, 6, 7, 2], end_ids=ends, finish_reason="stop", max_tokens=8) == 1.0
    assert replay_agreement([5, 6, 7], [5, 6, 7, 9], end_ids=ends, finish_reason="stop", max_tokens=8) == 0.0
    assert replay_agreement([5, 6, 7], [5, 9, 7, 0], end_ids=ends, finish_reason="stop", max_tokens=8) == 0.75
    assert replay_agreement([5, 6], [5, 6, 1], end_ids=ends, finish_reason="length", max_tokens=2) == 1.0
    assert replay_agreement([5, 6], [5, 6, 1], end_ids=ends, finish_reason="length", max_tokens=4) == 0.0
    assert replay_score(0.95) == 1.0 and replay_score(0.7) == 0.0 and 0 < replay_score(0.85) < 1
