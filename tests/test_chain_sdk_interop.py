"""Our chain client and the bittensor SDK (11.3.0) on the real runtime: each reads what the other writes.

The product never imports ``bittensor``; this file does, to check that our client reads the same chain the
same way the SDK does (metagraph, stake units, uid mapping, axons, u16 weights) and that writes go both ways.
Both clients talk to the offline spec-293 runtime (see ../shared/chain): the SDK is pinned to that endpoint
(no fallback or archive pools) and its token-symbol cache goes to a temporary file, so nothing leaves
127.0.0.1 or touches ``~/.bittensor``.

One SDK call does not run on spec 293: the ``SetWeights`` intent preflights the ``SubnetEpochConsensus``
storage item and composes ``set_mechanism_weights``, both newer than this runtime. The SDK's own path that
exists here is its generated ``calls.SubtensorModule.set_weights``, sent with ``Client.submit_call`` (the
SDK's encoding, signing and submission), carrying the u16 values of the SDK's ``normalize``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import bittensor as bt
import pytest
from bittensor.intents import normalize as sdk_normalize
from bittensor_wallet import Keypair

from inference_subnet.chain.localchain import SubnetHyper, advance_blocks, dev_keypair, prepare_subnet
from inference_subnet.chain.substrate import MODULE, SubstrateChainClient
from inference_subnet.chain.types import RAO_PER_TAO, AxonInfo, Metagraph
from inference_subnet.chain.weights import U16_MAX, convert_weights, weights_digest

pytestmark = pytest.mark.chain

RUN = uuid.uuid4().hex[:8]
TIMEOUT = 60.0
"""Deadline per call of either client: generous, the shared dev chain builds a block in about a second."""
TEMPO = 4
T = TypeVar("T")


def key(name: str) -> Keypair:
    return dev_keypair(f"//isn-sdk-{RUN}-{name}")


async def bounded(call: Awaitable[T]) -> T:
    """An SDK call under the same deadline as ours: its own reconnects must not hang a test."""
    async with asyncio.timeout(TIMEOUT):
        return await call


@dataclass(frozen=True)
class Subnet:
    """uid 0 the owner, uid 1 our validator, uid 2 the SDK's validator (both permitted), uids 3-5 miners."""

    netuid: int
    owner: Keypair
    validator: Keypair
    sdk_validator: Keypair
    miners: tuple[Keypair, ...]


@pytest.fixture(scope="module")
async def client(chain_url: str) -> AsyncIterator[SubstrateChainClient]:
    async with SubstrateChainClient(chain_url, call_timeout=TIMEOUT) as chain:
        yield chain


@pytest.fixture(scope="module")
async def sdk(chain_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[bt.Client]:
    """The SDK's async client on the test chain only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path_factory.mktemp("bt") / "token_symbols.json"))
        client = bt.Client(chain_url, fallback_endpoints=[], archive_endpoints=[])
        await bounded(client.connect())
        try:
            yield client
        finally:
            await bounded(client.close())


@pytest.fixture(scope="module")
async def subnet(client: SubstrateChainClient) -> Subnet:
    """Two staked validators with permits, three miners, the first one's axon served by us; plain weights."""
    owner, validator, sdk_validator = key("owner"), key("validator"), key("sdk-validator")
    miners = (key("m1"), key("m2"), key("m3"))
    netuid = await prepare_subnet(
        client, owner=owner, validators=[(validator, 100.0), (sdk_validator, 50.0)], miners=miners,
        hyper=SubnetHyper(tempo=TEMPO, max_allowed_validators=2),
    )
    await client.serve_axon(miners[0], netuid, "203.0.113.7", 8091)
    return Subnet(netuid, owner, validator, sdk_validator, miners)


def u16(share: float) -> int:
    return round(share * U16_MAX)


def rao(amount: float) -> int:
    return round(amount * RAO_PER_TAO)


def axon_string(axon: AxonInfo) -> str:
    """The SDK metagraph's ``ip:port`` (``[ip]:port`` for IPv6)."""
    return f"[{axon.ip}]:{axon.port}" if axon.ip_type == 6 else f"{axon.ip}:{axon.port}"


def assert_same_axon(ours: AxonInfo | None, raw: dict[str, Any]) -> None:
    """Our decoded axon against the runtime's ``AxonInfo`` record as the SDK decoded it."""
    if ours is None:
        assert int(raw["ip"]) == 0, raw
        return
    assert AxonInfo.ip_to_int(ours.ip) == (int(raw["ip"]), int(raw["ip_type"]))
    assert (ours.port, ours.ip_type, ours.protocol, ours.version) == (
        raw["port"], raw["ip_type"], raw["protocol"], raw["version"])


async def both_metagraphs(
    client: SubstrateChainClient, sdk: bt.Client, netuid: int
) -> tuple[Metagraph, bt.Metagraph | None, list[bt.Neuron]]:
    """Ours, the SDK's metagraph and the SDK's ``neurons_lite``, all read at one block."""
    head = await client.block()
    ours = await client.metagraph(netuid, block=head)
    theirs = await bounded(sdk.subnets.metagraph(netuid, block=head, commitments=False))
    lite = await bounded(sdk.neurons.all(netuid, block=head))
    return ours, theirs, lite


def assert_same_metagraph(ours: Metagraph, theirs: bt.Metagraph | None, lite: Sequence[bt.Neuron]) -> None:
    """Every per-uid field both expose, in the same unit (rao, u16), exactly."""
    assert theirs is not None and theirs.block == ours.block
    assert [n.uid for n in ours.neurons] == [n.uid for n in theirs.neurons] == [n.uid for n in lite]
    for mine, full, short in zip(ours.neurons, theirs.neurons, lite, strict=True):
        assert mine.hotkey == full.hotkey == short.hotkey
        assert mine.coldkey == full.coldkey == short.coldkey
        assert mine.validator_permit == full.validator_permit == short.validator_permit
        assert mine.active == full.active == short.active
        assert mine.last_update == full.last_update == short.last_update
        assert mine.registration_block == full.block_at_registration
        # our stake is the subnet's alpha in TAO units, the SDK's an alpha Balance of this subnet
        assert full.total_stake.netuid == short.total_stake.netuid == ours.netuid
        assert rao(mine.stake) == full.total_stake.rao == short.total_stake.rao
        assert rao(mine.emission) == full.emission.rao
        assert [u16(mine.trust), u16(mine.consensus), u16(mine.incentive), u16(mine.dividends)] == [
            u16(full.trust), u16(full.consensus), u16(full.incentive), u16(full.dividends)]
        assert full.axon == (None if mine.axon is None else axon_string(mine.axon))
        assert_same_axon(mine.axon, theirs.raw["axons"][mine.uid])
        assert_same_axon(mine.axon, short.raw["axon_info"])


async def our_weights(client: SubstrateChainClient, subnet: Subnet, uids: list[int],
                      weights: list[float]) -> list[tuple[int, int]]:
    """Set weights with our client from uid 1; returns the (uid, u16) pairs sent."""
    hyper = await client.hyperparameters(subnet.netuid)
    n_neurons = len((await client.metagraph(subnet.netuid)).neurons)
    attempt = await client.set_weights(subnet.validator, subnet.netuid, uids, weights)
    assert (attempt.outcome, attempt.path) == ("success", "set_weights")
    dests, values = convert_weights(uids, weights, n_neurons=n_neurons,
                                    max_weight_limit=hyper.max_weights_limit,
                                    min_allowed_weights=hyper.min_allowed_weights)
    assert attempt.digest == weights_digest(dests, values)  # this is the vector the extrinsic carried
    return list(zip(dests, values))


async def sdk_weights(sdk: bt.Client, subnet: Subnet, uids: list[int],
                      weights: list[float]) -> tuple[list[tuple[int, int]], bt.ExtrinsicResult]:
    """Set weights with the SDK from uid 2; returns the (uid, u16) pairs sent and the SDK's result."""
    dests, values = sdk_normalize(uids, weights)
    call = bt.calls.SubtensorModule.set_weights(
        netuid=subnet.netuid, dests=dests, weights=values, version_key=0)
    result = await bounded(sdk.submit_call(call, subnet.sdk_validator, signer="hotkey"))
    assert result.success, result
    return list(zip(dests, values)), result


async def test_metagraph_equals_the_sdks(
    client: SubstrateChainClient, sdk: bt.Client, subnet: Subnet
) -> None:
    ours, theirs, lite = await both_metagraphs(client, sdk, subnet.netuid)
    assert theirs is not None
    keys = [subnet.owner, subnet.validator, subnet.sdk_validator, *subnet.miners]
    assert ours.by_hotkey.keys() == {k.ss58_address for k in keys}  # the subnet as prepared, not a stranger's
    assert [n.uid for n in ours.validators] == [1, 2]
    assert ours.by_uid[1].stake > 0 and ours.by_uid[3].axon is not None  # compared fields are not all empty
    assert theirs.owner_hotkey == theirs.owner_coldkey == subnet.owner.ss58_address
    assert_same_metagraph(ours, theirs, lite)


async def test_sdk_reads_the_axon_we_serve(
    client: SubstrateChainClient, sdk: bt.Client, subnet: Subnet
) -> None:
    miner = subnet.miners[1]
    await client.serve_axon(miner, subnet.netuid, "2001:db8::7", 9000)
    theirs = await bounded(sdk.subnets.metagraph(subnet.netuid, commitments=False))
    neuron = theirs.by_hotkey(miner.ss58_address) if theirs else None
    assert neuron is not None and neuron.axon == "[2001:db8::7]:9000"
    stored = await bounded(sdk.query(bt.storage.SubtensorModule.Axons, [subnet.netuid, miner.ss58_address]))
    assert (stored["ip"], stored["ip_type"]) == AxonInfo.ip_to_int("2001:db8::7")
    assert (stored["port"], stored["protocol"]) == (9000, 4)
    assert_same_axon((await client.metagraph(subnet.netuid)).by_hotkey[miner.ss58_address].axon, stored)


async def test_sdk_reads_the_weights_we_set(
    client: SubstrateChainClient, sdk: bt.Client, subnet: Subnet
) -> None:
    sent = await our_weights(client, subnet, [3, 4, 5], [0.1, 0.35, 0.55])
    assert [value for _, value in sent] == [11915, 41704, 65535]  # rounding that is not trivial

    stored = await bounded(sdk.query(bt.storage.SubtensorModule.Weights, [subnet.netuid, 1]))
    assert [tuple(pair) for pair in stored] == sent
    full = {n.uid: n for n in await bounded(sdk.neurons.all(subnet.netuid, lite=False))}
    assert [tuple(pair) for pair in full[1].raw["weights"]] == sent
    rows = await bounded(sdk.weights.weights(subnet.netuid))  # the SDK's normalised view of the same row
    assert rows[1] == {uid: value / sum(v for _, v in sent) for uid, value in sent}


async def test_we_read_what_the_sdk_writes(
    client: SubstrateChainClient, sdk: bt.Client, subnet: Subnet
) -> None:
    caps = await client.capabilities()
    assert not caps.has_call(MODULE, "set_mechanism_weights")  # why the SDK's SetWeights intent is not used
    sent, result = await sdk_weights(sdk, subnet, [3, 4, 5], [0.5, 0.3, 0.2])
    assert sent == [(3, 65535), (4, 39321), (5, 26214)]
    stored = await client.query(MODULE, "Weights", [subnet.netuid, 2])
    assert [tuple(pair) for pair in stored] == sent
    header = await client.rpc("chain_getHeader", [result.block_hash])
    graph = await client.metagraph(subnet.netuid)
    assert graph.by_uid[2].last_update == int(header["number"], 16)  # the block the SDK's set landed in

    miner = subnet.miners[2]
    intent = bt.ServeAxon(netuid=subnet.netuid, ip="198.51.100.9", port=9001)
    served = await bounded(sdk.execute(intent, miner))
    assert served.success, served
    axon = (await client.metagraph(subnet.netuid)).by_hotkey[miner.ss58_address].axon
    assert axon is not None
    assert (axon.ip, axon.port, axon.ip_type, axon.protocol, axon.version) == ("198.51.100.9", 9001, 4, 4, 1)


async def test_metagraph_equals_the_sdks_after_an_epoch(
    client: SubstrateChainClient, sdk: bt.Client, subnet: Subnet
) -> None:
    """Weights from both clients, then an epoch: trust, consensus, incentive and dividends are not zero."""
    await our_weights(client, subnet, [3, 4, 5], [0.2, 0.3, 0.5])
    await sdk_weights(sdk, subnet, [3, 4], [0.6, 0.4])
    await advance_blocks(client, TEMPO + 1)
    ours, theirs, lite = await both_metagraphs(client, sdk, subnet.netuid)
    assert any(n.incentive > 0 for n in ours.neurons) and any(n.dividends > 0 for n in ours.neurons)
    assert_same_metagraph(ours, theirs, lite)
