"""Stop sequences over a stream of text pieces, as OpenAI's ``stop`` means them: the reply ends just before
the first occurrence of any stop sequence, which is itself never sent.

A stream cannot release text that might be the start of a stop sequence split across pieces, so the longest
tail that is a prefix of some stop sequence is held back until the next piece settles it. Pure text logic,
no model: the miner's streamed reply and the validator's reference decoding go through the same function,
so both cut at the same character.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass
class StopState:
    """What :func:`cut_at_stops` found: whether a stop sequence ended the text, and the text it let out."""

    stopped: bool = False
    text: str = ""


def _held_back(buffer: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``buffer`` that is a proper prefix of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
            if buffer.endswith(stop[:size]):
                longest = size
                break
    return longest


def _may_start_before(buffer: str, position: int, stops: Sequence[str]) -> bool:
    """Whether some stop sequence may begin before ``position``: a tail of ``buffer`` starting there is a
    proper prefix of it, which the next piece may complete."""
    return any(
        len(buffer) - start < len(stop) and stop.startswith(buffer[start:])
        for start in range(max(0, len(buffer) - max(map(len, stops)) + 1), position)
        for stop in stops
    )


def _stop_at(buffer: str, position: int, state: StopState) -> Iterator[str]:
    head = buffer[:position]
    state.stopped = True
    state.text += head
    if head:
        yield head


def cut_at_stops(pieces: Iterator[str], stops: Sequence[str], state: StopState) -> Iterator[str]:
    """``pieces`` up to (not including) the first stop sequence; closes ``pieces`` when one is found so
    decoding stops there too. Without stop sequences the pieces pass through unchanged."""
    stops = [s for s in stops if s]
    if not stops:
        for piece in pieces:
            state.text += piece
            yield piece
        return
    buffer = ""
    try:
        for piece in pieces:
            buffer += piece
            hits = [i for i in (buffer.find(s) for s in stops) if i >= 0]
            if hits:
                first = min(hits)
                if _may_start_before(buffer, first, stops):
                    continue  # a longer sequence that began earlier may still complete: it would come first
                yield from _stop_at(buffer, first, state)
                return
            keep = _held_back(buffer, stops)
            out, buffer = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
            if out:
                state.text += out
                yield out
        hits = [i for i in (buffer.find(s) for s in stops) if i >= 0]
        if hits:
            yield from _stop_at(buffer, min(hits), state)
        elif buffer:
            state.text += buffer
            yield buffer
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
