"""deploy/prometheus and deploy/grafana against the code: the alert rules pass ``promtool check`` and their
unit tests, and every query of the alerts and dashboards is valid PromQL naming only metrics that the
validator services, the gateway and the miner actually export, as read from their own ``/metrics``.
The validator services' ``/metrics`` is checked here as well, scraped over HTTP after real requests."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from bittensor_wallet import Keypair
from metrics_helpers import Scrape, delta, parse, scrape
from test_gateway_helpers import sqlite_url
from test_miner_app import Calls, make_app
from test_service_shell import Flaky, serving

from inference_subnet import __version__
from inference_subnet.chain.types import Metagraph
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import load_settings
from inference_subnet.store.sql import Database
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.managing import QuotaBook, ScoreBook
from inference_subnet.validator.service import ServiceHost

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
PROMTOOL = shutil.which("promtool")
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target (an alert may use them)."""
SUFFIXES = {
    "counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",), "unknown": ("",),
}
FUNCTIONS = frozenset({
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "rate", "irate", "increase", "histogram_quantile", "time", "abs", "bool", "topk",
    "label_values", "offset", "le", "clamp_min", "clamp_max", "absent", "vector", "scalar",
})


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def exportable(scrapes: list[Scrape]) -> frozenset[str]:
    """Every series name the scraped families can produce (a labelled family with no child yet shows
    its HELP and TYPE only; its sample names follow from the type)."""
    names: set[str] = set()
    for s in scrapes:
        for family, kind in _family_types(s.text).items():
            names.update(family + suffix for suffix in SUFFIXES[kind])
        names |= {sample.name for sample in s.samples}
    return frozenset(names)


def _family_types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name.removesuffix("_total") if kind == "counter" else name] = kind
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside braces and strings that are not
    functions, keywords, durations or numbers."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return {n for n in names if n not in FUNCTIONS and not n.startswith("$")}


# -- what the code exports ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[frozenset[str]]:
    """The names in the ``/metrics`` of a validator service host, a gateway and a miner, built as the CLI
    builds them and scraped over their ASGI interface."""
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import connect

    async def scrape_all() -> list[Scrape]:
        redis = connect(redis_url)
        keys = Keys(subnet="names", netuid=1, role="test")
        db = Database(sqlite_url(tmp_path_factory.mktemp("db")))
        settings = load_settings()
        client = MinerClient(Keypair.create_from_uri("//NamesValidator"))
        try:
            gateway = create_gateway_app(
                settings, tasks={"arithmetic": ArithmeticTask()}, redis=redis, keys=keys,
                metagraph=StaticMetagraphSource(Metagraph(netuid=1, block=1, neurons=())),
                miner_client=client, quota_book=QuotaBook(redis, keys, settings.validator.quotas),
                score_book=ScoreBook(redis, keys, settings.validator.scoring), db=db)
            host = ServiceHost([Flaky()], redis=redis, keys=keys, instance="names")
            miner = make_app(redis, keys, Calls())
            out = []
            for app in (host.app(), gateway, miner):
                transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    out.append(await scrape(http))
            return out
        finally:
            await client.aclose()
            await db.aclose()
            await redis.aclose()

    scrapes = asyncio.run(scrape_all())
    assert {s.value("isn_build_info", component=c) for s, c in zip(scrapes, ("validator", "gateway", "miner"),
                                                                        strict=True)} == {1.0}
    yield exportable(scrapes)


def test_exported_names_are_found(exported: frozenset[str]) -> None:
    """The collection above sees families with no sample yet, and nothing made up."""
    assert {"isn_http_requests_total", "isn_gateway_upstream_seconds_bucket", "isn_miner_auth_refusals_total",
            "isn_blocks_since_last_weight_set", "isn_scoring_queue_depth", "isn_redis_up"} <= exported
    assert "isn_made_up_total" not in exported
    assert metric_names('sum by (job) (rate(isn_a_total{x="b"}[5m])) / on (job) isn_b > 0 and up == 0') == {
        "isn_a_total", "isn_b", "up"}


# -- the alert rules ------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_and_the_config() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"]}
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    silent = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert tested == fired == silent == names  # each alert both fires and stays silent in some case


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosen one threshold and they fail on that alert."""
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text().replace("> 720", "> 800"))
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "alertname: ISNWeightsNotSet" in result.stdout + result.stderr


def test_alerts_name_only_exported_metrics(exported: frozenset[str]) -> None:
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exported - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} is exported by no component"


# -- the dashboards ----------------------------------------------------------------------------------------


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    for path in sorted(GRAFANA.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                inner = re.fullmatch(r"label_values\((.*), \w+\)", var["definition"])
                assert inner, var["definition"]
                yield path.name, f"variable {var['name']}", inner.group(1)


def test_there_is_a_dashboard_for_each_component() -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in GRAFANA.glob("*.json")}
    assert set(boards) == {"validator", "gateway", "miner"}
    assert len({b["uid"] for b in boards.values()}) == 3
    for name, board in boards.items():
        assert sum(1 for p in board["panels"] if p["type"] != "row") >= 8, name


def test_dashboards_name_only_exported_metrics(exported: frozenset[str]) -> None:
    queries = list(dashboard_queries())
    assert len(queries) > 40
    for board, panel, expr in queries:
        unknown = metric_names(expr) - exported
        assert not unknown, f"{board} / {panel}: {sorted(unknown)} is exported by no component"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's variables replaced by plain values)."""
    rules = []
    for i, (_, _, expr) in enumerate(dashboard_queries()):
        plain = expr.replace("$__rate_interval", "5m").replace('"$job"', '".*"')
        assert "$" not in plain, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": plain})
    document = {"groups": [{"name": "dashboards", "rules": rules}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(document))
    result = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the validator services' /metrics --------------------------------------------------------------------


@pytest.fixture
async def host(redis, keys) -> AsyncIterator[tuple[ServiceHost, httpx.AsyncClient]]:
    service = Flaky()
    served = ServiceHost([service], redis=redis, keys=keys, heartbeat_seconds=0.2, instance="metrics")
    async for _, client in serving(served):
        yield served, client


async def test_validator_metrics_over_http(host, redis, keys) -> None:
    _, client = host
    await redis.set(keys.metagraph_synced(), repr(time.time() - 42))
    before = await scrape(client)
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/flaky")).status_code == 200
    assert (await client.get("/no/such/" + "x" * 40)).status_code == 404
    after = await scrape(client)
    total = "isn_http_requests_total"
    assert delta(after, before, total, component="validator", route="/health", method="GET",
                 status="200") == 1
    assert delta(after, before, total, component="validator", route="/flaky", status="200") == 1
    assert delta(after, before, total, component="validator", route="unmatched", status="404") == 1
    assert delta(after, before, total, component="validator", route="/metrics", status="200") == 1
    assert not [s for s in after.samples if "/no/such" in str(s.labels)]
    assert after.value("isn_build_info", component="validator", version=__version__) == 1
    assert after.value("isn_redis_up") == 1
    assert 42 <= after.value("isn_metagraph_age_seconds") < 100
    assert after.value("isn_service_up", service="flaky") == 1
    assert "isn_gateway_upstream_seconds" not in after.families  # nothing of another component

    await redis.delete(keys.metagraph_synced())
    assert parse((await client.get("/metrics")).text).value("isn_metagraph_age_seconds") == float("inf")
