"""Our commit hash, reveal window and max-weight rule against a real subtensor runtime (spec 293).

A hash commit made from :func:`hash_commit` must be accepted by ``reveal_weights`` in exactly the window
:func:`reveal_window` predicts, and refused with a wrong salt or too early. The weight conversion must be
accepted where the SDK's rounding is refused with ``MaxWeightExceeded``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from bittensor_wallet import Keypair

from inference_subnet.chain.capabilities import Capabilities
from inference_subnet.chain.commit import hash_commit, make_salt, reveal_window
from inference_subnet.chain.localchain import SubnetHyper, advance_blocks, prepare_subnet, sudo_calls
from inference_subnet.chain.preflight import preflight
from inference_subnet.chain.substrate import SubstrateChainClient
from inference_subnet.chain.types import ChainError, Hyperparameters, InvalidWeights, RateLimited
from inference_subnet.chain.weights import convert_weights, within_max_weight_limit

pytestmark = pytest.mark.chain

MODULE = "SubtensorModule"
LIMIT_U16 = 32768
SCORES = [0.219, 0.059, 0.478]
SDK_VALUES = [51625, 13908, 65535]
"""What the bittensor SDK submits for ``SCORES`` at limit 32768 (see test_weights): one unit too high."""


def fresh() -> Keypair:
    return Keypair.create_from_mnemonic(Keypair.generate_mnemonic())


@dataclass
class Subnet:
    chain: SubstrateChainClient
    netuid: int
    validator: Keypair
    validator_uid: int
    miner_uids: list[int]
    n_neurons: int
    tempo: int


@pytest.fixture(scope="module")
async def subnet(chain_url: str) -> AsyncIterator[Subnet]:
    """A subnet of our own on the shared dev chain: one permitted validator, three miners."""
    validator, miners = fresh(), [fresh() for _ in range(3)]
    async with SubstrateChainClient(chain_url, call_timeout=60) as chain:
        netuid = await prepare_subnet(
            chain, owner=fresh(), validators=[(validator, 100.0)], miners=miners,
            hyper=SubnetHyper(tempo=10, weights_rate_limit=0, commit_reveal=False, commit_reveal_period=1,
                              min_allowed_weights=1, max_weight_limit=LIMIT_U16),
        )
        uid = int(await chain.query(MODULE, "Uids", [netuid, validator.ss58_address]))
        miner_uids = [int(await chain.query(MODULE, "Uids", [netuid, m.ss58_address])) for m in miners]
        n_neurons = int(await chain.query(MODULE, "SubnetworkN", [netuid]))
        yield Subnet(chain, netuid, validator, uid, miner_uids, n_neurons, tempo=10)


async def set_commit_reveal(subnet: Subnet, enabled: bool, rate_limit: int = 0) -> None:
    await sudo_calls(subnet.chain, [
        ("sudo_set_commit_reveal_weights_enabled", {"netuid": subnet.netuid, "enabled": enabled}),
        ("sudo_set_weights_set_rate_limit", {"netuid": subnet.netuid, "weights_set_rate_limit": rate_limit}),
    ])


async def stored_weights(subnet: Subnet) -> list[tuple[int, int]]:
    raw = await subnet.chain.query(MODULE, "Weights", [subnet.netuid, subnet.validator_uid])
    return [(int(u), int(v)) for u, v in raw]


async def test_sdk_rounding_is_refused_and_ours_is_accepted(subnet: Subnet) -> None:
    await set_commit_reveal(subnet, False)
    uids, values = convert_weights(subnet.miner_uids, SCORES, n_neurons=subnet.n_neurons,
                                   max_weight_limit=LIMIT_U16 / 65535)
    assert not within_max_weight_limit(SDK_VALUES, LIMIT_U16) and within_max_weight_limit(values, LIMIT_U16)

    with pytest.raises(InvalidWeights) as refused:
        await subnet.chain.submit(subnet.validator, MODULE, "set_weights", {
            "netuid": subnet.netuid, "dests": subnet.miner_uids, "weights": SDK_VALUES, "version_key": 0})
    assert refused.value.chain_error == "MaxWeightExceeded"

    await subnet.chain.submit(subnet.validator, MODULE, "set_weights", {
        "netuid": subnet.netuid, "dests": uids, "weights": values, "version_key": 0})
    assert await stored_weights(subnet) == list(zip(uids, values))


async def test_hash_commit_is_revealed_in_the_predicted_window(subnet: Subnet) -> None:
    await set_commit_reveal(subnet, True)
    chain, netuid, hotkey = subnet.chain, subnet.netuid, subnet.validator
    uids, values = convert_weights(subnet.miner_uids, [0.5, 0.3, 0.2], n_neurons=subnet.n_neurons,
                                   max_weight_limit=LIMIT_U16 / 65535)
    salt = make_salt()
    digest = hash_commit(account=hotkey.public_key, netuid=netuid, uids=uids, values=values, salt=salt,
                         version_key=0)

    receipt = await chain.submit(hotkey, MODULE, "commit_weights", {"netuid": netuid, "commit_hash": digest})
    commit_block = await _block_of(chain, receipt)
    commits = await chain.query(MODULE, "WeightCommits", [netuid, hotkey.ss58_address])
    stored_hash, stored_block, first, last = commits[-1]
    assert stored_hash == digest and int(stored_block) == commit_block
    assert (int(first), int(last)) == reveal_window(netuid, subnet.tempo, 1, commit_block)

    reveal = {"netuid": netuid, "uids": uids, "values": values, "salt": salt, "version_key": 0}
    head = await chain.block()
    if head + 3 < int(first):  # a reveal executing before the window is refused (margin: shared dev chain)
        with pytest.raises(RateLimited) as early:
            await chain.submit(hotkey, MODULE, "reveal_weights", reveal)
        assert early.value.chain_error == "RevealTooEarly"
    head = await chain.block()
    await advance_blocks(chain, int(first) - 1 - head)  # the next extrinsic executes in block `first`

    wrong = dict(reveal, salt=[(s + 1) % 65536 for s in salt])
    with pytest.raises(ChainError) as mismatch:
        await chain.submit(hotkey, MODULE, "reveal_weights", wrong)
    assert mismatch.value.chain_error == "InvalidRevealCommitHashNotMatch"

    await chain.submit(hotkey, MODULE, "reveal_weights", reveal)
    assert await stored_weights(subnet) == list(zip(uids, values))
    assert await chain.block() <= int(last)


async def _block_of(chain: SubstrateChainClient, receipt) -> int:
    header = await chain.rpc("chain_getHeader", [receipt.block_hash])
    number = header["number"] if isinstance(header, dict) else header.get("result", {}).get("number")
    return int(number, 16) if isinstance(number, str) else int(number)


async def test_preflight_ready_block_is_exact_on_the_runtime(subnet: Subnet) -> None:
    """``ready_at_block`` is the first head from which a submitted set passes ``WeightsSetRateLimit``:
    one block earlier the runtime refuses it, at that head it accepts it in block ``LastUpdate + limit``.

    The dev chain may be shared with other test runs that build blocks too; an attempt whose blocks do
    not line up is run again (bounded), and every assertion that holds regardless is checked each time.
    """
    limit = 4
    await set_commit_reveal(subnet, False, rate_limit=limit)
    chain, hotkey = subnet.chain, subnet.validator
    params = {"netuid": subnet.netuid, "dests": subnet.miner_uids[:2], "weights": [65535, 65535],
              "version_key": 0}
    hyper = Hyperparameters(
        netuid=subnet.netuid, tempo=subnet.tempo, weights_rate_limit=limit, max_weights_limit=LIMIT_U16 / 65535,
        min_allowed_weights=1, commit_reveal_enabled=False, commit_reveal_period=1, weights_version=0,
        immunity_period=0, serving_rate_limit=0, activity_cutoff=5000)
    caps = Capabilities.of(["SubtensorModule.set_weights"])

    def verdict(head: int, last_update: int):
        return preflight(hyper=hyper, block=head, caller_uid=subnet.validator_uid, caller_permit=True,
                         last_update=last_update, uids=params["dests"], n_neurons=subnet.n_neurons,
                         capabilities=caps)

    async def set_now() -> int:
        """Set weights (waiting out the limit if needed); the block it executed in."""
        for _ in range(3):
            try:
                return await _block_of(chain, await chain.submit(hotkey, MODULE, "set_weights", params))
            except RateLimited:
                await advance_blocks(chain, limit)
        raise AssertionError("could not set weights")

    for _ in range(5):
        last_update = await set_now()
        stored = (await chain.query(MODULE, "LastUpdate", [subnet.netuid]))[subnet.validator_uid]
        assert int(stored) == last_update
        ready = verdict(await chain.block(), last_update).ready_at_block
        assert ready == last_update + limit - 1
        head = await chain.block()
        await advance_blocks(chain, ready - 1 - head)
        if await chain.block() != ready - 1:
            continue  # someone else built blocks: try again
        assert verdict(ready - 1, last_update).too_soon
        try:
            await chain.submit(hotkey, MODULE, "set_weights", params)
        except RateLimited as refused:
            assert refused.chain_error == "SettingWeightsTooFast"
        else:
            continue  # included later than the next block because of other runs: not a verdict
        if await chain.block() != ready:
            continue
        assert not verdict(ready, last_update).too_soon
        accepted_in = await _block_of(chain, await chain.submit(hotkey, MODULE, "set_weights", params))
        assert accepted_in >= last_update + limit
        if accepted_in == last_update + limit:
            return
    raise AssertionError("the shared dev chain kept building blocks under this test; no exact run in 5 tries")
