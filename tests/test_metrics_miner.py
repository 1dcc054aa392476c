"""The miner's ``/metrics``, scraped over HTTP after real requests: in process (ASGI transport, a real
Redis), and from a real two-worker ``inference-subnet miner`` whose workers share one set of metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from conftest import free_port
from metrics_helpers import delta, parse, scrape
from test_miner_app import NO_PERMIT, STRANGER, Calls, forged, make_app, signed
from test_miner_processes import post_fresh, setup_subnet
from test_miner_processes import signed as signed_for

from inference_subnet import __version__
from inference_subnet.miner.process import MinerProcess

ROUTE = "/tasks/arithmetic"
TOTAL = "isn_http_requests_total"


def client_at(app, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://miner")


async def test_counts_answers_refusals_bytes_and_stream_first_byte(redis, keys) -> None:
    calls = Calls()
    app = make_app(redis, keys, calls)
    async with client_at(app) as miner:
        before = await scrape(miner)
        headers, body = signed()
        ok = await miner.post(ROUTE, content=body, headers=headers)
        assert ok.status_code == 200
        replay = await miner.post(ROUTE, content=body, headers=headers)
        assert replay.json()["error"] == "replayed_request"
        for kp, code in ((STRANGER, "not_registered"), (NO_PERMIT, "no_validator_permit")):
            h, b = signed(kp)
            assert (await miner.post(ROUTE, content=b, headers=h)).json()["error"] == code
        h, b = forged()
        assert (await miner.post(ROUTE, content=b, headers=h)).json()["error"] == "bad_signature"
        stream_body = json.dumps({"text": "hi", "repeat": 3}).encode()
        h, b = signed(body=stream_body, path="/tasks/echo")
        streamed = await miner.post("/tasks/echo", content=b, headers=h)
        assert streamed.status_code == 200 and len(streamed.text.splitlines()) == 3
        assert (await miner.get("/no/such/path/" + "x" * 50)).status_code == 404
        after = await scrape(miner)

    assert delta(after, before, TOTAL, component="miner", route=ROUTE, method="POST", status="200") == 1
    assert delta(after, before, TOTAL, component="miner", route=ROUTE, status="401") == 2
    assert delta(after, before, TOTAL, component="miner", route=ROUTE, status="403") == 2
    assert delta(after, before, TOTAL, component="miner", route="unmatched", method="GET", status="404") == 1
    assert not [s for s in after.samples if "/no/such" in str(s.labels)]  # raw paths never become labels
    assert delta(after, before, "isn_http_request_duration_seconds_count", route=ROUTE, status="200") == 1
    for reason, n in (("replayed_request", 1), ("not_registered", 1), ("no_validator_permit", 1),
                      ("bad_signature", 1)):
        assert delta(after, before, "isn_miner_auth_refusals_total", task="arithmetic", reason=reason) == n
    # the 403s are refused before their bodies are read
    assert delta(after, before, "isn_http_request_bytes_total", route=ROUTE) == 3 * len(body)
    assert delta(after, before, "isn_http_response_bytes_total", route=ROUTE) >= len(ok.content)
    assert delta(after, before, "isn_http_response_bytes_total", route="/tasks/echo") == len(streamed.content)
    assert delta(after, before, "isn_http_stream_first_byte_seconds_count", route="/tasks/echo") == 1
    assert delta(after, before, "isn_http_stream_first_byte_seconds_count", route=ROUTE) == 0
    assert after.value("isn_build_info", component="miner", version=__version__) == 1
    assert after.value("isn_redis_up") == 1
    assert 0 <= after.value("isn_metagraph_age_seconds") < 60
    assert delta(after, before, TOTAL, route="/metrics", status="200") == 1  # the first scrape
    assert calls.count == 2


async def test_quota_refusals_are_counted(redis, keys) -> None:
    app = make_app(redis, keys, Calls(), capacity={"arithmetic": 0})
    async with client_at(app) as miner:
        before = await scrape(miner)
        h, b = signed()
        r = await miner.post(ROUTE, content=b, headers=h)
        assert r.status_code == 429
        after = await scrape(miner)
    assert delta(after, before, "isn_miner_quota_refusals_total", task="arithmetic") == 1
    assert delta(after, before, TOTAL, route=ROUTE, status="429") == 1


async def test_metrics_are_for_allowed_networks_only(redis, keys) -> None:
    """Loopback by default: a stranger on the internet gets the 404 of a path that does not exist."""
    app = make_app(redis, keys, Calls())
    async with client_at(app, "203.0.113.9") as stranger:
        refused = await stranger.get("/metrics")
        unknown = await stranger.get("/nothing-here")
    assert refused.status_code == unknown.status_code == 404
    assert refused.json() == {"error": "not_found", "reason": "Not Found"} == unknown.json()
    async with client_at(app, "::ffff:127.0.0.1") as mapped:
        assert (await mapped.get("/metrics")).status_code == 200

    opened = make_app(redis, keys, Calls(), metrics_allow=["203.0.113.0/24"])
    async with client_at(opened, "203.0.113.9") as scraper:
        assert (await scraper.get("/metrics")).status_code == 200
    async with client_at(opened) as local:
        assert (await local.get("/metrics")).status_code == 404

    closed = make_app(redis, keys, Calls(), metrics_allow=[])
    async with client_at(closed) as local:
        assert (await local.get("/metrics")).status_code == 404
        assert (await local.get("/health")).status_code == 200


async def test_two_workers_scrape_as_one_miner(tmp_path: Path, redis_url: str) -> None:
    """``--workers 2``: whichever worker answers a scrape, it shows the requests of both."""
    miner, validator, stranger, metagraph = setup_subnet(tmp_path)
    proc = MinerProcess(port=free_port(), wallet_path=tmp_path / "wallets", wallet_name="miner",
                        metagraph_file=metagraph, workers=2,
                        env={"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"metrics{free_port()}"}).start()
    try:
        await proc.wait_ready_async()
        body = b'{"op":"add","a":1,"b":2}'
        served = await asyncio.gather(*(
            post_fresh(proc.url, body, signed_for(validator, miner.ss58_address, body)) for _ in range(12)))
        assert [r.status_code for r in served] == [200] * 12
        refused = [await post_fresh(proc.url, body, signed_for(stranger, miner.ss58_address, body))
                   for _ in range(3)]
        assert {r.status_code for r in refused} == {403}
        workers_seen: set[str] = set()
        totals = []
        for _ in range(40):  # until both workers have answered a /health (each reports its own counts)
            async with httpx.AsyncClient(timeout=5) as client:
                health = (await client.get(proc.url + "/health")).json()
                workers_seen.add(json.dumps(health["requests"], sort_keys=True))
                r = await client.get(proc.url + "/metrics")
            assert r.status_code == 200
            s = parse(r.text)
            totals.append((s.value(TOTAL, route=ROUTE, status="200"),
                           s.value(TOTAL, route=ROUTE, status="403"),
                           s.value("isn_miner_auth_refusals_total", reason="not_registered")))
            if len(workers_seen) > 1 and len(totals) >= 5:
                break
        assert len(workers_seen) > 1, "every request reached one worker: nothing shows the sum"
        assert set(totals) == {(12.0, 3.0, 3.0)}
        assert s.value("isn_build_info", component="miner") == 1
    finally:
        assert proc.stop() == 0, proc.tail()
