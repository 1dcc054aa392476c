"""What each API key used over a period, read from the request log: requests, prompt and completion tokens.

The log already holds one row per organic request with the tokens its answer counted, so usage is a
``GROUP BY`` over it, nothing kept on the side that could drift from what was served. Only served requests
(status 200) count tokens; every logged request (served, or failed by every miner tried) counts as a
request. Requests refused before routing (400, 401, 429) are not logged, so they count nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import case, func, select

from inference_subnet.store.sql import ApiKey, Database, RequestLog, utcnow

_PERIOD = re.compile(r"(\d{1,6})([mhdw])")
_UNIT = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_PERIOD = dt.timedelta(days=3660)


def parse_period(text: str) -> dt.timedelta:
    """``30m``, ``24h``, ``7d``, ``2w`` as a duration; ``ValueError`` with a reason otherwise."""
    match = _PERIOD.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a period such as 30m, 24h, 7d or 2w")
    period = dt.timedelta(seconds=int(match[1]) * _UNIT[match[2]])
    if not dt.timedelta(0) < period <= MAX_PERIOD:
        raise ValueError(f"{text!r} must be more than 0 and at most {MAX_PERIOD.days} days")
    return period


@dataclass(frozen=True, slots=True)
class KeyUsage:
    key_id: int | None
    name: str | None
    requests: int
    served: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


async def key_usage(
    db: Database, *, since: dt.datetime, until: dt.datetime | None = None, key_id: int | None = None
) -> list[KeyUsage]:
    """Usage per key of the requests logged in ``[since, until)``, busiest key first."""
    until = until or utcnow()
    served = RequestLog.status == 200
    query = (
        select(
            RequestLog.key_id,
            ApiKey.name,
            func.count(),
            func.sum(case((served, 1), else_=0)),
            func.sum(case((served, func.coalesce(RequestLog.prompt_tokens, 0)), else_=0)),
            func.sum(case((served, func.coalesce(RequestLog.completion_tokens, 0)), else_=0)),
        )
        .outerjoin(ApiKey, ApiKey.id == RequestLog.key_id)
        .where(RequestLog.ts >= since, RequestLog.ts < until)
        .group_by(RequestLog.key_id, ApiKey.name)
        .order_by(func.count().desc(), RequestLog.key_id)
    )
    if key_id is not None:
        query = query.where(RequestLog.key_id == key_id)
    async with db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [
        KeyUsage(key, name, int(n), int(ok or 0), int(prompt or 0), int(completion or 0))
        for key, name, n, ok, prompt, completion in rows
    ]
