"""Real miner processes (``inference-subnet miner`` under uvicorn on 127.0.0.1): replay protection shared
through Redis across processes and across workers, and the CLI's start-up errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from bittensor_wallet import Keypair
from conftest import free_port
from typer.testing import CliRunner

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.cli.main import app
from inference_subnet.miner.process import MinerProcess
from inference_subnet.protocol import btauth

ROUTE = "/tasks/arithmetic"


def setup_subnet(root: Path) -> tuple[Keypair, Keypair, Keypair, Path]:
    """Wallets for a miner, a validator and a stranger, and a metagraph file naming the first two."""
    _, miner = create_wallet(root / "wallets", "miner", "default")
    _, validator = create_wallet(root / "wallets", "validator", "default")
    stranger = Keypair.create_from_uri("//ProcStranger")
    metagraph = Metagraph(netuid=1, block=10, neurons=(
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey=validator.ss58_address, stake=1000.0,
               validator_permit=True, registration_block=1),
        Neuron(uid=1, hotkey=miner.ss58_address, coldkey=miner.ss58_address, stake=0.0, validator_permit=False,
               registration_block=2, axon=AxonInfo(ip="10.0.0.1", port=1)),
    ))
    path = root / "metagraph.json"
    path.write_text(metagraph.to_json())
    return miner, validator, stranger, path


def signed(kp: Keypair, receiver: str, body: bytes = b'{"op":"add","a":20,"b":22}') -> dict[str, str]:
    headers = btauth.sign(kp, method="POST", path=ROUTE, body=body, receiver_ss58=receiver)
    return {**headers, "content-type": "application/json"}


async def post_fresh(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """One request on its own connection (so a multi-worker server may hand it to any worker)."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + ROUTE, content=body, headers=headers)


async def test_replay_across_two_miner_processes_sharing_redis(tmp_path: Path, redis_url: str) -> None:
    miner, validator, stranger, metagraph = setup_subnet(tmp_path)
    common: dict[str, Any] = {
        "wallet_path": tmp_path / "wallets", "wallet_name": "miner", "metagraph_file": metagraph,
        "env": {"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"replay{free_port()}"},
    }
    a = MinerProcess(port=free_port(), **common).start()
    b = MinerProcess(port=free_port(), **common).start()
    try:
        await asyncio.gather(a.wait_ready_async(), b.wait_ready_async())
        body = b'{"op":"add","a":20,"b":22}'
        headers = signed(validator, miner.ss58_address, body)
        first = await post_fresh(a.url, body, headers)
        assert first.status_code == 200 and first.json() == {"result": 42}
        replay = await post_fresh(b.url, body, headers)
        assert (replay.status_code, replay.json()["error"]) == (401, "replayed_request")
        again = await post_fresh(a.url, body, headers)
        assert (again.status_code, again.json()["error"]) == (401, "replayed_request")

        refused = await post_fresh(b.url, body, signed(stranger, miner.ss58_address, body))
        assert (refused.status_code, refused.json()["error"]) == (403, "not_registered")

        async with httpx.AsyncClient() as client:
            health_a = (await client.get(a.url + "/health")).json()
            health_b = (await client.get(b.url + "/health")).json()
        assert health_a["requests"] == {"handled": 1, "200": 1, "401": 1}
        assert health_b["requests"] == {"401": 1, "403": 1}  # nothing reached B's handler
        assert health_a["hotkey"] == health_b["hotkey"] == miner.ss58_address
    finally:
        a.stop()
        b.stop()


async def test_workers_share_the_parents_embedded_valkey(tmp_path: Path) -> None:
    """No REDIS_URL: the CLI starts one embedded Valkey and both uvicorn workers use it, so a request
    replayed to whichever worker is refused."""
    miner, validator, _, metagraph = setup_subnet(tmp_path)
    proc = MinerProcess(port=free_port(), wallet_path=tmp_path / "wallets", wallet_name="miner",
                        metagraph_file=metagraph, workers=2,
                        env={"REDIS_URL": "", "ISN_REDIS_URL": ""}).start()
    try:
        await proc.wait_ready_async()
        body = b'{"op":"multiply","a":6,"b":7}'
        headers = signed(validator, miner.ss58_address, body)
        answers = [await post_fresh(proc.url, body, headers) for _ in range(8)]
        assert [r.status_code for r in answers] == [200] + [401] * 7
        assert {r.json().get("error") for r in answers[1:]} == {"replayed_request"}
        # and fresh requests are served by the workers alike
        fresh = await asyncio.gather(*(
            post_fresh(proc.url, body, signed(validator, miner.ss58_address, body)) for _ in range(8)
        ))
        assert all(r.status_code == 200 and r.json() == {"result": 42} for r in fresh)
    finally:
        assert proc.stop() == 0, proc.tail()
    assert "embedded Valkey" in "\n".join(proc.log)


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        (["--wallet-name", "nobody"], "--wallet.name", "hotkey file not found"),
        (["--task", "no-such-task"], "--task", "unknown task"),
        (["--metagraph-file", "{tmp}/missing.json"], "--metagraph-file", "metagraph file not found"),
        (["--behaviour", "evil"], "--behaviour", "expected one of"),
    ],
)
def test_cli_start_up_errors_name_the_flag(tmp_path: Path, args: list[str], flag: str, message: str) -> None:
    _, _, _, metagraph = setup_subnet(tmp_path)
    base = ["miner", "--wallet-path", str(tmp_path / "wallets"), "--wallet-name", "miner",
            "--metagraph-file", str(metagraph)]
    result = CliRunner().invoke(app, base + [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert flag in result.output and message in result.output


async def test_miner_on_an_unreachable_chain_answers_503_until_it_has_a_metagraph(
    tmp_path: Path, redis_url: str
) -> None:
    """Without a metagraph file the miner reads the chain; while no snapshot exists it refuses, clearly."""
    miner, validator, _, _ = setup_subnet(tmp_path)
    proc = MinerProcess(
        port=free_port(), wallet_path=tmp_path / "wallets", wallet_name="miner",
        extra_args=["--network", f"ws://127.0.0.1:{free_port()}", "--netuid", "3"],
        env={"REDIS_URL": redis_url, "ISN_CHAIN__CALL_TIMEOUT": "1"},
    ).start()
    try:
        await proc.wait_ready_async()
        body = b'{"op":"add","a":1,"b":2}'
        response = await post_fresh(proc.url, body, signed(validator, miner.ss58_address, body))
        assert response.status_code == 503
        assert response.json()["error"] == "metagraph_unavailable"
    finally:
        proc.stop()


def test_miner_help() -> None:
    result = CliRunner().invoke(app, ["miner", "--help"])
    assert result.exit_code == 0
    for flag in ("--task", "--port", "--host", "--wallet.name", "--wallet.hotkey", "--wallet.path",
                 "--metagraph-file", "--subtensor.network", "--netuid", "--behaviour", "--workers", "--log-format"):
        assert flag in result.output
