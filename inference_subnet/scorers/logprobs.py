"""Verifying a language model's completion from the reference model's log-probabilities of it.

Re-generating a completion costs the validator as much as it cost the miner. Reading it costs one
teacher-forced forward pass over prompt and completion (or one ``prompt_logprobs`` call to a server that
holds the model): for each completion token, the reference says how likely the miner's token was. This
module turns that evidence into a quality in [0, 1]; it needs no model and does no I/O.

* Greedy (temperature 0): every token must be the reference's most likely one, up to :data:`TIE_GAP`
  nats (near-ties flip with thread counts and kernels); the score ramps with the share that pass.
* Sampled (temperature > 0): a token is *plausible* when the probability of drawing a token at most as
  likely as it is at least :data:`TAIL_FLOOR` (and it lies within the ``top_p`` nucleus). That alone
  cannot tell sampled text from text that is merely possible, so the completion's total surprisal is
  compared with what honest sampling gives: its expectation is the summed entropy of the positions'
  distributions and its variance their summed surprisal variances. ``z`` far above 0 is text less likely
  than sampling gives (random tokens, another model, shuffled text); far below is text more likely than
  sampling gives. Text that is always the argmax when the request asked for a temperature is caught more
  surely by counting: honest sampling draws the argmax at each position with the argmax's probability,
  so too many argmax tokens is its own test (:func:`argmax_z`).
* The ending: ``stop`` claims the model ended its turn, so the end-of-sequence token must pass the same
  test at the end; ``length`` claims the token budget ran out, so the completion must be about
  ``max_tokens`` long (counted after re-tokenization, hence :data:`LENGTH_SLACK`). A completion longer than
  the budget is padded.

What it cannot see, by construction: which seed drew a sampled completion (any honest sample passes), and
a sampled completion cut short where the model's end-of-sequence was itself likely. When miners run the
reference's own sampler and send their token ids, :func:`replay_agreement` sees both: the same forward pass
gives every position's distribution, and drawing from them with the request's seed repeats the miner's
draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TIE_GAP = 0.05
"""Nats by which a greedy token may trail the argmax and still count as it."""
TAIL_FLOOR = 1e-4
"""Least probability, under honest sampling, of drawing a token at most as likely as the miner's."""
NUCLEUS_SLACK = 1e-3
"""Probability mass by which a token may lie outside the ``top_p`` nucleus (rounding across kernels)."""
ARGMAX_FULL, ARGMAX_NONE = 0.9, 0.5
"""Greedy: shares of argmax tokens that give the whole score and none of it (linear between). Read in one
teacher-forced pass, one flipped near-tie costs one token, not the rest of the answer, so an honest answer
sits near 1 and a shuffled repetitive one well below."""
PLAUSIBLE_FULL, PLAUSIBLE_NONE = 0.95, 0.6
"""Shares of plausible tokens that give the whole score and none of it (linear between)."""
Z_FULL, Z_NONE = 2.5, 4.0
"""``|z|`` of the total surprisal that keeps the whole score and that leaves none (linear between)."""
VARIANCE_FLOOR = 0.05
"""Variance added per token, so a nearly deterministic distribution does not make ``z`` explode."""
LENGTH_SLACK = 0.75
"""Share of ``max_tokens`` a ``length`` completion must reach after re-tokenization."""
PAD_SLACK = 1.25
"""Completions beyond ``PAD_SLACK * max_tokens + 4`` tokens are padded, whatever they say."""


@dataclass(frozen=True)
class TokenEvidence:
    """What the reference says about one token the miner produced, under the request's distribution
    (tempered by the temperature, cut to the ``top_p`` nucleus; at temperature 0, the untempered one)."""

    logprob: float
    """Log-probability of the miner's token."""
    rank: int
    """1 for the most likely token, ``1 + (number of strictly more likely tokens)`` otherwise."""
    best_logprob: float
    """Log-probability of the most likely token."""
    mass_above: float
    """Probability of the tokens strictly more likely than the miner's (before any nucleus cut)."""
    entropy: float
    """Entropy of the distribution, nats: the expected surprisal of an honest draw."""
    variance: float
    """Variance of an honest draw's surprisal."""


@dataclass(frozen=True)
class Verdict:
    """A completion's score and why."""

    score: float
    tokens: int
    agreement: float
    """Greedy: share of argmax tokens. Sampled: share of plausible tokens."""
    z: float
    """Standardised total surprisal (0 when greedy)."""
    ending: bool
    reason: str


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _ramp(value: float, full: float, none: float) -> float:
    """1 at or beyond ``full``, 0 at or beyond ``none``, linear between (either direction)."""
    return _clip((value - none) / (full - none))


def padded(tokens: int, max_tokens: int) -> bool:
    """Whether a completion of ``tokens`` tokens is too long for a ``max_tokens`` budget to be honest (checked
    before any model reads it, so an over-long answer costs the validator nothing)."""
    return tokens > PAD_SLACK * max_tokens + 4


def is_argmax(token: TokenEvidence) -> bool:
    return token.rank == 1 or token.best_logprob - token.logprob <= TIE_GAP


def is_plausible(token: TokenEvidence, top_p: float = 1.0) -> bool:
    """Whether honest sampling could reasonably have drawn this token."""
    if not math.isfinite(token.logprob):
        return False
    if token.rank > 1 and token.mass_above >= top_p + NUCLEUS_SLACK:
        return False
    return 1.0 - token.mass_above >= TAIL_FLOOR


def surprisal_z(tokens: Sequence[TokenEvidence]) -> float:
    """How many standard deviations the completion's total surprisal lies from honest sampling's mean."""
    if not tokens:
        return 0.0
    excess = sum(-t.logprob - t.entropy for t in tokens if math.isfinite(t.logprob))
    if any(not math.isfinite(t.logprob) for t in tokens):
        return math.inf
    spread = math.sqrt(sum(max(t.variance, 0.0) for t in tokens) + VARIANCE_FLOOR * len(tokens))
    return excess / spread


def argmax_z(tokens: Sequence[TokenEvidence]) -> float:
    """How many standard deviations more argmax tokens the completion holds than honest sampling draws."""
    if not tokens:
        return 0.0
    expected = [math.exp(t.best_logprob) for t in tokens]
    hits = sum(t.rank == 1 for t in tokens)
    spread = math.sqrt(sum(p * (1.0 - p) for p in expected) + VARIANCE_FLOOR * len(tokens))
    return (hits - sum(expected)) / spread


def verify(
    tokens: Sequence[TokenEvidence],
    end: TokenEvidence | None,
    *,
    finish_reason: str,
    max_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    stop_sequences: bool = False,
) -> Verdict:
    """The score of a completion of ``len(tokens)`` tokens, given the reference's evidence for each and,
    for ``end``, for the end-of-sequence token after the last one (needed when ``finish_reason`` is
    ``stop``). ``stop_sequences``: the request had stop sequences, so a ``stop`` may be one of them rather
    than the model's end of turn; the end is then not checked, only the tokens before the last one."""
    n = len(tokens)
    if padded(n, max_tokens):
        return Verdict(0.0, n, 0.0, 0.0, False, f"{n} tokens for a budget of {max_tokens}: padded")
    greedy = temperature <= 0
    if finish_reason == "stop" and stop_sequences:
        # Cut at a character, the last token may be the head of one the model would write whole: not judged.
        ended, why, end, tokens = True, "", None, tokens[:-1]
    elif finish_reason == "stop":
        ended = end is not None and (is_argmax(end) if greedy else is_plausible(end, top_p))
        why = "" if ended else "claims a stop the model would not make there"
    elif finish_reason == "length":
        ended = n >= math.floor(LENGTH_SLACK * max_tokens)
        why = "" if ended else f"claims the budget ran out after {n} of {max_tokens} tokens"
    else:
        ended, why = False, f"unknown finish reason {finish_reason!r}"
    if greedy:
        scored = [*tokens, end] if finish_reason == "stop" and end is not None else list(tokens)
        agreement = sum(map(is_argmax, scored)) / len(scored) if scored else 0.0
        score = _ramp(agreement, ARGMAX_FULL, ARGMAX_NONE) if ended else 0.0
        return Verdict(score, n, agreement, 0.0, ended, why or f"{agreement:.0%} of tokens are the argmax")
    scored = [*tokens, end] if finish_reason == "stop" and end is not None else list(tokens)
    if not scored:
        return Verdict(0.0, 0, 0.0, 0.0, False, why or "no tokens")
    agreement = sum(is_plausible(t, top_p) for t in scored) / len(scored)
    z = surprisal_z(scored)
    too_greedy = argmax_z(scored)
    likelihood = _ramp(abs(z), Z_FULL, Z_NONE) * _ramp(too_greedy, Z_FULL, Z_NONE) if math.isfinite(z) else 0.0
    score = _ramp(agreement, PLAUSIBLE_FULL, PLAUSIBLE_NONE) * likelihood if ended else 0.0
    reason = why or (
        f"{agreement:.0%} plausible, surprisal z={z:+.1f}"
        + (" (less likely than sampling)" if z > Z_FULL else " (more likely than sampling)" if z < -Z_FULL else "")
        + (f", argmax {too_greedy:+.1f} sd too often" if too_greedy > Z_FULL else "")
    )
    return Verdict(score, n, agreement, z, ended, reason)


def evidence_from_top(
    token_logprob: float,
    rank: int,
    top: Mapping[int, float],
    *,
    temperature: float,
    vocab_size: int,
    top_p: float = 1.0,
) -> TokenEvidence:
    """:class:`TokenEvidence` from what an inference server returns: the miner's token's untempered
    log-probability and rank, and the ``top`` likeliest tokens' untempered log-probabilities (vLLM's
    ``prompt_logprobs``; the miner's own token may be among them or not).

    The server resolves the likeliest tokens one by one and the rest only as a whole, so the evidence is
    that of the distribution it resolves: each of the ``top`` tokens, and "one of the others" as one event
    with the rest of the mass. A token among the ``top`` keeps its own probability; one beyond them is
    scored as that event, and the entropy and variance are those of this coarser distribution, which keeps
    the surprisal test exact (an honest draw's coarse surprisal has exactly that mean and variance) where
    guessing the shape of the unseen tail would bias it. At a temperature other than 1 the tail's tempered
    mass is estimated as if spread evenly over its tokens. Coarser evidence is weaker evidence: random text
    from a model whose ``top`` holds little of the mass passes more easily than against the full
    distribution."""
    head = {t: v for t, v in top.items() if math.isfinite(v)}
    in_head = rank <= len(head) or token_logprob >= min(head.values(), default=math.inf)
    values = sorted(head.values(), reverse=True)
    if not values:
        values = [token_logprob]
        in_head = True
    k = len(values)
    tail_tokens = max(vocab_size - k, 0)
    tail_mass = max(0.0, 1.0 - sum(math.exp(v) for v in values)) if tail_tokens else 0.0
    above = sum(math.exp(v) for v in values if v > token_logprob)
    if temperature <= 0:
        return TokenEvidence(token_logprob, max(rank, 1), values[0], above, 0.0, 0.0)
    beta = 1.0 / temperature
    # Tempered weights relative to the likeliest token (no overflow); the tail's as tail_tokens even shares.
    head_w = [math.exp(beta * (v - values[0])) for v in values]
    tail_w = tail_tokens * math.exp(beta * (math.log(tail_mass / tail_tokens) - values[0])) if tail_mass > 0 else 0.0
    total = sum(head_w) + tail_w
    probs = [w / total for w in head_w]
    tail_p = tail_w / total
    above_t = sum(p for v, p in zip(values, probs) if v > token_logprob)
    events = [*probs, tail_p]
    if top_p < 1.0:
        # The nucleus: the likeliest events whose mass reaches top_p (the tail, last, only if needed).
        running, kept = 0.0, []
        for p in events:
            if running >= top_p:
                break
            kept.append(p)
            running += p
        events = kept
    norm = sum(events)
    dist = [p / norm for p in events if p > 0]
    entropy = -sum(p * math.log(p) for p in dist)
    variance = sum(p * math.log(p) ** 2 for p in dist) - entropy**2
    if in_head:
        own = math.exp(beta * (token_logprob - values[0])) / total
    else:
        own = tail_p
    logprob = math.log(own / norm) if own > 0 else -math.inf
    return TokenEvidence(logprob, max(rank, 1), math.log(probs[0] / norm), above_t, entropy, max(variance, 0.0))


def replay_agreement(
    completion: Sequence[int], replayed: Sequence[int], *, end_ids: frozenset[int], finish_reason: str,
    max_tokens: int,
) -> float:
    """Share of positions where the reference's sampler, replayed with the request's seed over the miner's
    own tokens, drew the miner's token; 0 when the ending is false (for a ``stop``, the draw after the last
    token must end the turn; for a ``length``, the budget must be spent exactly). Each draw consumes the
    seeded generator alike whatever was drawn before, so one flipped near-tie costs one position, not the
    rest."""
    n = len(completion)
    if len(replayed) != n + 1:
        raise ValueError(f"{len(replayed)} replayed draws for {n} tokens: expected one more")
    hits = sum(a == b for a, b in zip(completion, replayed))
    if finish_reason == "stop":  # the claimed ending is the claim that matters most: it must hold
        return (hits + 1) / (n + 1) if replayed[n] in end_ids else 0.0
    if finish_reason == "length" and n == max_tokens:
        return hits / n
    return 0.0


REPLAY_FULL, REPLAY_NONE = 0.95, 0.75
"""Replay: shares of agreeing draws that give the whole score and none of it. Honest answers agree on every
draw but a rare near-boundary one. Stricter than the greedy ramp because a nearly flat model's draws are
decided by the seed more than by the model, so another model with the same seed agrees on many."""


def replay_score(agreement: float) -> float:
    """A replay's agreement as a score (:data:`REPLAY_FULL`, :data:`REPLAY_NONE`)."""
    return _ramp(agreement, REPLAY_FULL, REPLAY_NONE)
