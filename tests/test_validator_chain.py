"""The whole validator against the real subtensor runtime (spec 293, ../shared/chain), with real miner processes.

A subnet of its own (fresh keys per run): one staked validator, three ``inference-subnet miner`` processes on
127.0.0.1 (honest, flaky, wrong, garbage) whose axons are stored on chain with a public-looking IP (the runtime
refuses loopback) and reached through ``chain.ip_override``. ``validator run``'s services (sidecar,
synthesizing, scoring, orchestrator, weights) challenge them, score them and set weights, which are read
back from the chain's ``Weights`` storage: the honest miner ranks first, the flaky one (half its answers
fail) below it, and wrong and garbage answers earn nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from conftest import free_port
from inference_subnet.chain.localchain import SubnetHyper, advance_blocks, dev_keypair, prepare_subnet
from inference_subnet.chain.substrate import MODULE, SubstrateChainClient
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.process import MinerProcess
from inference_subnet.settings import load_settings
from inference_subnet.validator.runner import run_all, validator_keys
from inference_subnet.validator.scoring import ScoringWorkers
from inference_subnet.validator.weights import WeightSetter
from test_service_runner import Started

pytestmark = pytest.mark.chain

RUN = uuid.uuid4().hex[:8]
BEHAVIOURS = ("honest", "flaky", "wrong", "garbage")
PUBLIC_IP = "203.0.113.10"
OWNER_FUNDS = 2_000.0
CALL_TIMEOUT = 180.0
"""Generous: a long-lived shared dev chain with many subnets builds a block in seconds, not 0.5 s."""


async def test_validator_sets_weights_on_chain_ranking_honest_first(
    chain_url: str, redis, redis_url: str, tmp_path: Path
) -> None:
    chain = SubstrateChainClient(chain_url, call_timeout=CALL_TIMEOUT)
    miners_procs: list[MinerProcess] = []
    try:
        owner = dev_keypair(f"//isn-{RUN}-owner")
        validator = dev_keypair(f"//isn-{RUN}-validator")
        wallets = tmp_path / "wallets"
        miners = {b: create_wallet(wallets, b, "default", hotkey_uri=f"//isn-{RUN}-miner-{b}")[1]
                  for b in BEHAVIOURS}
        netuid = await prepare_subnet(
            chain, owner=owner, validators=[(validator, 100.0)], miners=list(miners.values()),
            hyper=SubnetHyper(tempo=4, max_allowed_validators=1), owner_funds_tao=OWNER_FUNDS,
        )
        ports = {b: free_port() for b in BEHAVIOURS}
        for b, hotkey in miners.items():
            await chain.serve_axon(hotkey, netuid, PUBLIC_IP, ports[b])
        metagraph = await chain.metagraph(netuid)
        assert metagraph.by_hotkey[validator.ss58_address].validator_permit
        assert all(metagraph.by_hotkey[k.ss58_address].axon.ip == PUBLIC_IP for k in miners.values())
        metagraph_file = tmp_path / "metagraph.json"
        metagraph_file.write_text(metagraph.to_json())

        subnet_name = f"chain{RUN}"
        for b in BEHAVIOURS:
            miners_procs.append(MinerProcess(
                port=ports[b], wallet_path=wallets, wallet_name=b, behaviour=b, metagraph_file=metagraph_file,
                env={"REDIS_URL": redis_url, "ISN_SUBNET_NAME": subnet_name, "ISN_CHAIN__NETUID": str(netuid)},
            ).start())
        for proc in miners_procs:
            await proc.wait_ready_async(60)

        cfg = load_settings(
            subnet_name=subnet_name, redis_url=redis_url,
            chain={"network": chain_url, "netuid": netuid, "ip_override": "127.0.0.1",
                   "metagraph_refresh_seconds": 1.0, "call_timeout": CALL_TIMEOUT},
            validator={"round_interval_seconds": 0.2, "miners_per_round": 4,
                       "scoring": {"prior_strength": 0, "claim_idle_seconds": 5}},
        )
        start = Started()
        runner = asyncio.create_task(run_all(cfg, validator, chain=chain, host="127.0.0.1", port=0,
                                             install_signals=False, on_start=start))
        uid = {b: metagraph.by_hotkey[k.ss58_address].uid for b, k in miners.items()}
        validator_uid = metagraph.by_hotkey[validator.ss58_address].uid
        stored: dict[int, int] = {}
        try:
            host = await start.wait()
            scoring = next(s for s in host.services if isinstance(s, ScoringWorkers))
            weights = next(s for s in host.services if isinstance(s, WeightSetter))
            # every round challenges all four miners: once a few rounds are scored, each has evidence
            assert await scoring.wait_processed(3, timeout=120)
            for _ in range(6):  # bounded: a new block, the setter's tick on it, then chain storage
                head = await advance_blocks(chain, 1)
                assert await weights.wait_ticked(head, timeout=120)
                raw = await chain.query(MODULE, "Weights", [netuid, validator_uid]) or []
                stored = {int(u): int(v) for u, v in raw}
                if stored.get(uid["honest"]) and stored.get(uid["flaky"]):
                    break
        finally:
            start.stop()
            await asyncio.wait_for(runner, 60)
        assert stored, "no weights on chain"
        assert stored[uid["honest"]] == max(stored.values()) == 65535  # the chain's max-upscaled u16
        assert 0 < stored[uid["flaky"]] < stored[uid["honest"]]
        assert stored.get(uid["wrong"], 0) == stored.get(uid["garbage"], 0) == 0
        keys = validator_keys(cfg, validator.ss58_address)
        attempts = [json.loads(a) for a in await redis.lrange(keys.weight_attempts(), 0, -1)]
        assert attempts and attempts[0]["outcome"] == "success" and attempts[0]["path"] == "set_weights"
        last = json.loads(await redis.get(keys.last_weights()))
        assert last["extrinsic_hash"].startswith("0x")
    finally:
        for proc in miners_procs:
            proc.stop()
        await chain.close()
