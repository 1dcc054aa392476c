"""Reading a ``/metrics`` answer the way Prometheus does (imported by the metrics tests; no tests here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """Every sample of one exposition, and the family names in it."""

    samples: tuple[Sample, ...]
    families: frozenset[str]
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(s.value for s in self.samples if s.name == name
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    def names(self) -> frozenset[str]:
        """Every sample name (``_total``, ``_bucket``, ``_count``... included) and every family name."""
        return frozenset(s.name for s in self.samples) | self.families


def parse(text: str) -> Scrape:
    families = list(text_string_to_metric_families(text))
    samples = tuple(s for f in families for s in f.samples)
    return Scrape(samples, frozenset(f.name for f in families), text)


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> Scrape:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return parse(r.text)


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def union(scrapes: Iterable[Scrape]) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for s in scrapes:
        out |= s.names()
    return out
