"""Canaries: the request digest (pure) and the canary book against a real Redis."""

from __future__ import annotations

from pydantic import BaseModel

from inference_subnet.settings import load_settings
from inference_subnet.validator.canaries import CanaryBook, PenalisedScores, canary_book, request_digest


class Req(BaseModel):
    id: str = "0" * 32
    text: str
    n: int = 1


def test_digest_is_the_content_whatever_the_id_or_key_order() -> None:
    a = Req(id="a" * 32, text="hello", n=2)
    assert request_digest(a) == request_digest(Req(id="b" * 32, text="hello", n=2))
    assert request_digest(a) == request_digest({"n": 2, "text": "hello"})
    assert request_digest(a) != request_digest(Req(text="hello", n=3))
    assert request_digest(a) != request_digest(Req(text="hello ", n=2))  # exact: a perturbed copy escapes


async def test_plant_check_and_bench(redis, keys) -> None:
    book = CanaryBook(redis, keys, ttl_seconds=60.0, bench_seconds=60.0)
    one, two = Req(text="one"), Req(text="two")
    assert await book.plant("t", [(one, "m1@5"), (two, "m2@6")]) == 2
    assert 0 < await redis.pttl(keys.canary("t", request_digest(one))) <= 60_000
    assert await book.check("t", Req(text="three")) is None
    assert await book.check("other-task", one) is None  # canaries are per task
    assert await book.caught(["m1@5", "m2@6"]) == set()
    assert await book.check("t", Req(id="f" * 32, text="one")) == "m1@5"
    assert await book.check("t", one) == "m1@5"  # stays live: a retried forward is refused too
    assert await book.caught(["m1@5", "m2@6", "m3@7"]) == {"m1@5"}
    assert 0 < await redis.pttl(keys.canary_caught("m1@5")) <= 60_000


async def test_no_bench_when_its_length_is_zero(redis, keys) -> None:
    book = CanaryBook(redis, keys, ttl_seconds=60.0, bench_seconds=0.0)
    await book.plant("t", [(Req(text="x"), "m1@5")])
    assert await book.check("t", Req(text="x")) == "m1@5"
    assert await book.caught(["m1@5"]) == set()


async def test_weights_read_benched_miners_as_zero(redis, keys) -> None:
    class Scores:
        async def aggregates(self, identities, tasks):
            return {i: 0.8 for i in identities}

    book = CanaryBook(redis, keys, ttl_seconds=60.0, bench_seconds=60.0)
    await book.plant("t", [(Req(text="x"), "m1@5")])
    await book.check("t", Req(text="x"))
    assert await PenalisedScores(Scores(), book).aggregates(["m1@5", "m2@6"], ["t"]) == {
        "m1@5": 0.0,
        "m2@6": 0.8,
    }


def test_canaries_follow_the_settings(redis, keys) -> None:
    assert canary_book(redis, keys, load_settings(validator={"canaries": False})) is None
    book = canary_book(redis, keys, load_settings(validator={"canary_bench_seconds": 30}))
    assert book is not None and book.bench_ms == 30_000
