"""``/docs`` and ``/redoc`` on the gateway work offline: every asset they load comes from the gateway itself,
and Swagger UI renders the schema in a browser that cannot resolve any other host."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from bittensor_wallet import Keypair
from fastapi import FastAPI

from browser_helpers import chromium, serving
from inference_subnet.chain.types import Metagraph
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.sql import Database
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.managing import QuotaBook, ScoreBook

TASK = ArithmeticTask()
LOADED = re.compile(r'(?:src|href)="([^"]+)"')


def gateway(redis: aioredis.Redis, keys: Keys, tmp_path: Path) -> tuple[FastAPI, Database]:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    db = Database(settings.database_url)
    app = create_gateway_app(
        settings, tasks={TASK.name: TASK}, redis=redis, keys=keys,
        metagraph=StaticMetagraphSource(Metagraph(netuid=1, block=1, neurons=())),
        miner_client=MinerClient(Keypair.create_from_uri("//docs")),
        quota_book=QuotaBook(redis, keys, settings.validator.quotas),
        score_book=ScoreBook(redis, keys, settings.validator.scoring), db=db,
    )
    return app, db


async def test_docs_pages_load_only_local_assets_and_each_is_served(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    app, db = gateway(redis, keys, tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            expected = {"/docs": {".js": "text/javascript", ".css": "text/css", ".png": "image/png"},
                        "/redoc": {".js": "text/javascript", ".png": "image/png"}}
            for page, kinds in expected.items():
                response = await http.get(page)
                assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
                assert "cdn" not in response.text and "googleapis" not in response.text
                urls = LOADED.findall(response.text)
                assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
                assert {Path(u).suffix for u in urls} == set(kinds)
                for url in urls:
                    asset = await http.get(url)
                    assert asset.status_code == 200, url
                    assert asset.headers["content-type"].startswith(kinds[Path(url).suffix]), url
                    assert len(asset.content) > 1000, url
                assert "'/openapi.json'" in response.text or '"/openapi.json"' in response.text
            bundle = (await http.get("/docs/assets/swagger-ui-bundle.js")).text
            assert "SwaggerUIBundle" in bundle
            for path in ("/docs/assets/index.html", "/docs/assets/..%2Fcore.py", "/docs/assets/"):
                assert (await http.get(path)).status_code == 404, path
            assert (await http.get("/docs/oauth2-redirect")).status_code == 200
            assert "/docs" not in (await http.get("/openapi.json")).json()["paths"]
    finally:
        await db.aclose()


async def test_swagger_ui_renders_the_schema_in_a_browser_with_no_other_host(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    app, db = gateway(redis, keys, tmp_path)
    hits: Counter[str] = Counter()
    try:
        async with serving(app, hits) as base:
            # every host but this one fails to resolve: a CDN reference would leave the page blank
            dom = (await chromium(f"{base}/docs", tmp_path / "profile", "--dump-dom",
                                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")).decode()
    finally:
        await db.aclose()
    assert hits["/docs/assets/swagger-ui-bundle.js"] == 1 and hits["/openapi.json"] == 1, hits
    # Swagger UI ran and rendered the OpenAPI 3.1 schema: the title and the task route are in the DOM
    assert "inference-subnet gateway" in dom
    assert 'class="opblock' in dom and "/v1/tasks/arithmetic" in dom
    assert "Unable to render this definition" not in dom
