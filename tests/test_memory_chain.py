"""The in-memory chain: same interface and same weight rules as the runtime, without a chain."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from bittensor_wallet import Keypair

from inference_subnet.chain.capabilities import Capabilities
from inference_subnet.chain.commit import epoch_index, reveal_window
from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import (
    ChainClient,
    ChainError,
    InvalidIp,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
    WeightVecTooShort,
)
from inference_subnet.chain.weights import convert_weights

SPEC_293 = Capabilities.of(
    f"SubtensorModule.{c}" for c in ("set_weights", "commit_weights", "reveal_weights", "serve_axon")
)
KEYS = {name: Keypair.create_from_uri(f"//memory-{name}") for name in
        ("owner", "v1", "v2", "m1", "m2", "m3", "m4", "late")}


def build(*, capabilities: Capabilities | None = None, **hyper) -> MemoryChainClient:
    """Subnet 1: uid 0-1 permitted validators, uid 2-4 miners."""
    chain = MemoryChainClient(capabilities=capabilities) if capabilities else MemoryChainClient()
    chain.create_subnet(1, **{"weights_rate_limit": 100, "tempo": 20, **hyper})
    owner = KEYS["owner"]
    chain.register(1, KEYS["v1"], owner, stake=1000.0, validator_permit=True)
    chain.register(1, KEYS["v2"], owner, stake=500.0, validator_permit=True)
    for name in ("m1", "m2", "m3"):
        chain.register(1, KEYS[name], owner, stake=1.0)
    return chain


def test_is_a_chain_client() -> None:
    members = [name for name in vars(ChainClient) if not name.startswith("_")]
    assert {"block", "blocks", "metagraph", "hyperparameters", "serve_axon", "set_weights",
            "weight_attempts", "close"} <= set(members)
    for name in members:
        assert callable(getattr(MemoryChainClient, name)), name


async def test_metagraph_and_hyperparameters() -> None:
    chain = build()
    graph = await chain.metagraph(1)
    assert [n.uid for n in graph.neurons] == [0, 1, 2, 3, 4]
    assert graph.by_uid[0].hotkey == KEYS["v1"].ss58_address and graph.by_uid[0].stake == 1000.0
    assert [n.validator_permit for n in graph.neurons] == [True, True, False, False, False]
    blocks = [n.registration_block for n in graph.neurons]
    assert blocks == sorted(set(blocks))  # one block per registration extrinsic
    assert graph.block == await chain.block() == blocks[-1]
    hyper = await chain.hyperparameters(1)
    assert (hyper.netuid, hyper.tempo, hyper.weights_rate_limit) == (1, 20, 100)
    with pytest.raises(UnknownSubnet):
        await chain.metagraph(9)
    with pytest.raises(UnknownSubnet):
        await chain.hyperparameters(9)
    with pytest.raises(TypeError):
        chain.create_subnet(2, no_such_parameter=1)
    assert chain.create_subnet().netuid == 2


async def test_plain_set_reads_back_and_records() -> None:
    chain = build()
    attempt = await chain.set_weights(KEYS["v1"], 1, [2, 3, 4], [0.5, 0.3, 0.2])
    assert attempt.outcome == "success" and attempt.path == "set_weights"
    assert attempt.extrinsic_hash and attempt.extrinsic_hash.startswith("0x")
    assert attempt.block == await chain.block()
    expected = convert_weights([2, 3, 4], [0.5, 0.3, 0.2], n_neurons=5, max_weight_limit=1.0)
    assert chain.raw_weights(1) == {0: list(zip(*expected))}
    shares = chain.weights(1)[0]
    assert shares == pytest.approx({2: 0.5, 3: 0.3, 4: 0.2}, abs=1e-4)
    assert (await chain.metagraph(1)).by_uid[0].last_update == attempt.block
    assert chain.weight_attempts() == (attempt,)


async def test_too_soon_is_an_outcome_then_succeeds_at_the_block_given() -> None:
    chain = build()
    first = await chain.set_weights(KEYS["v1"], 1, [2, 3], [1.0, 1.0])
    second = await chain.set_weights(KEYS["v1"], 1, [2, 3], [1.0, 0.0])
    assert second.outcome == "too_soon" and second.extrinsic_hash is None
    assert second.ready_at_block == first.block + 100 - 1
    assert chain.weights(1)[0] == pytest.approx({2: 0.5, 3: 0.5})  # unchanged
    chain.advance(second.ready_at_block - 1 - await chain.block())
    assert (await chain.set_weights(KEYS["v1"], 1, [2], [1.0])).outcome == "too_soon"
    chain.advance(1)
    third = await chain.set_weights(KEYS["v1"], 1, [2], [1.0])
    assert third.outcome == "success" and third.block == first.block + 100
    assert [a.outcome for a in chain.weight_attempts()] == ["success", "too_soon", "too_soon", "success"]


async def test_rejections_are_typed_and_recorded() -> None:
    chain = build(min_allowed_weights=2, weights_version=3)
    cases = [
        (KEYS["late"], [2, 3], [1.0, 1.0], {}, NotRegistered, "HotKeyNotRegisteredInSubNet"),
        (KEYS["m1"], [3, 4], [1.0, 1.0], {}, NoValidatorPermit, "NeuronNoValidatorPermit"),
        (KEYS["v1"], [2, 9], [1.0, 1.0], {}, InvalidWeights, "UidVecContainInvalidOne"),
        (KEYS["v1"], [2], [1.0], {}, WeightVecTooShort, "WeightVecLengthIsLow"),
        (KEYS["v1"], [2, 3], [1.0, 0.0], {}, WeightVecTooShort, "WeightVecLengthIsLow"),  # zero dropped
        (KEYS["v1"], [2, 3], [1.0, 1.0], {"version_key": 2}, InvalidWeights, "IncorrectWeightVersionKey"),
        (KEYS["v1"], [2, 3], [1.0, 1.0], {"mechid": 1}, ChainError, "MechanismDoesNotExist"),
    ]
    for key, uids, weights, extra, error, name in cases:
        with pytest.raises(error) as raised:
            await chain.set_weights(key, 1, uids, weights, **extra)
        assert raised.value.chain_error == name
    with pytest.raises(UnknownSubnet):
        await chain.set_weights(KEYS["v1"], 7, [0], [1.0])
    attempts = chain.weight_attempts()
    assert len(attempts) == len(cases) + 1 and {a.outcome for a in attempts} == {"rejected"}
    assert all(a.error for a in attempts)
    assert chain.weights(1) == {}
    # a lone weight on itself needs neither a permit nor the minimum count
    assert (await chain.set_weights(KEYS["m1"], 1, [2], [1.0])).outcome == "success"


async def test_timelocked_commit_reveals_at_the_reveal_epoch() -> None:
    chain = build(commit_reveal_enabled=True, commit_reveal_period=2)
    attempt = await chain.set_weights(KEYS["v1"], 1, [2, 3], [3.0, 1.0])
    assert attempt.outcome == "success" and attempt.path == "commit_timelocked_weights"
    assert chain.weights(1) == {}  # hidden until the chain reveals it
    target = epoch_index(1, 20, attempt.block) + 2
    reveal_block = next(b for b in range(attempt.block, attempt.block + 200) if epoch_index(1, 20, b) == target)
    chain.advance(reveal_block - 1 - await chain.block())
    assert chain.weights(1) == {}
    chain.advance(1)
    assert chain.weights(1)[0] == pytest.approx({2: 0.75, 3: 0.25}, abs=1e-4)
    assert (await chain.metagraph(1)).by_uid[0].last_update == attempt.block  # set at commit time


async def test_timelocked_commit_dropped_when_permit_lost_before_reveal() -> None:
    chain = build(commit_reveal_enabled=True)
    await chain.set_weights(KEYS["v2"], 1, [2, 3], [1.0, 1.0])
    chain.set_validator_permit(1, KEYS["v2"], False)
    chain.advance(100)
    assert chain.weights(1) == {}  # the runtime drops it silently: preflight refuses such commits up front
    with pytest.raises(NoValidatorPermit):
        await chain.set_weights(KEYS["v2"], 1, [2, 3], [1.0, 1.0])


async def test_hash_commit_reveal_on_an_older_runtime() -> None:
    chain = build(capabilities=SPEC_293, commit_reveal_enabled=True, weights_rate_limit=0)
    attempt = await chain.set_weights(KEYS["v1"], 1, [2, 3, 4], [1.0, 2.0, 3.0])
    assert attempt.path == "commit_weights" and attempt.outcome == "success"
    (pending,) = chain.pending_reveals()
    assert (pending.first_block, pending.last_block) == reveal_window(1, 20, 1, attempt.block)
    assert await chain.reveal_pending() == []  # window not open yet
    chain.advance(pending.first_block - 1 - await chain.block())  # the reveal executes in first_block
    (reveal,) = await chain.reveal_pending()
    assert reveal.outcome == "success" and reveal.path == "reveal_weights" and reveal.block == pending.first_block
    assert chain.weights(1)[0] == pytest.approx({2: 1 / 6, 3: 2 / 6, 4: 3 / 6}, abs=1e-4)
    assert chain.pending_reveals() == ()

    late = await chain.set_weights(KEYS["v2"], 1, [2, 3], [1.0, 1.0])
    (pending,) = chain.pending_reveals()
    chain.advance(pending.last_block + 1 - await chain.block())
    (expired,) = await chain.reveal_pending()
    assert late.outcome == "success"
    assert expired.outcome == "rejected" and "ExpiredWeightCommit" in (expired.error or "")
    assert 1 not in chain.weights(1)


async def test_mechanisms_keep_their_own_weights_and_rate_limits() -> None:
    chain = MemoryChainClient()
    chain.create_subnet(4, mechanisms=2, weights_rate_limit=50)
    chain.register(4, KEYS["v1"], KEYS["owner"], validator_permit=True)
    for name in ("m1", "m2"):
        chain.register(4, KEYS[name], KEYS["owner"])
    zero = await chain.set_weights(KEYS["v1"], 4, [1, 2], [1.0, 0.0])
    one = await chain.set_weights(KEYS["v1"], 4, [1, 2], [0.0, 1.0], mechid=1)
    assert (zero.path, one.path) == ("set_weights", "set_mechanism_weights")
    assert one.outcome == "success" and one.mechid == 1  # not rate limited by mechanism 0's set
    assert chain.raw_weights(4, 0) == {0: [(1, 65535)]}
    assert chain.raw_weights(4, 1) == {0: [(2, 65535)]}
    assert (await chain.metagraph(4, mechid=1)).by_uid[0].last_update == one.block
    assert (await chain.metagraph(4)).by_uid[0].last_update == zero.block
    with pytest.raises(ChainError):
        await chain.metagraph(4, mechid=2)


async def test_reregistration_is_a_new_identity_and_starts_fresh() -> None:
    chain = MemoryChainClient()
    chain.create_subnet(1, max_uids=3, weights_rate_limit=0, immunity_period=5)
    chain.register(1, KEYS["v1"], KEYS["owner"], stake=100.0, validator_permit=True)
    chain.register(1, KEYS["m1"], KEYS["owner"], stake=2.0)
    chain.register(1, KEYS["m2"], KEYS["owner"], stake=1.0)
    await chain.set_weights(KEYS["m2"], 1, [2], [1.0])  # a self weight: uid 2 has a row of its own
    await chain.serve_axon(KEYS["m2"], 1, "8.8.8.8", 8091)
    before = (await chain.metagraph(1)).by_uid[2]
    chain.advance(5)  # out of immunity

    uid = chain.register(1, KEYS["m3"], KEYS["owner"])  # full: the least stake is pruned
    after = (await chain.metagraph(1)).by_uid[uid]
    assert uid == 2 and after.hotkey == KEYS["m3"].ss58_address
    assert after.identity != before.identity and after.registration_block > before.registration_block
    assert (after.axon, after.last_update) == (None, 0)
    assert 2 not in chain.raw_weights(1)

    again = chain.register(1, KEYS["m2"], KEYS["owner"], uid=1)  # the old hotkey comes back elsewhere
    neuron = (await chain.metagraph(1)).by_uid[again]
    assert neuron.hotkey == before.hotkey and neuron.identity != before.identity
    with pytest.raises(ChainError) as exc:
        chain.register(1, KEYS["m2"], KEYS["owner"])
    assert exc.value.chain_error == "HotKeyAlreadyRegisteredInSubNet"


async def test_serve_axon_rules() -> None:
    chain = build(serving_rate_limit=10)
    receipt = await chain.serve_axon(KEYS["m1"], 1, "203.0.113.7", 8091)
    assert receipt.events == ("SubtensorModule.AxonServed",)
    await chain.serve_axon(KEYS["m2"], 1, "2001:db8::7", 9000, protocol=4)
    graph = await chain.metagraph(1)
    assert (graph.by_uid[2].axon.ip, graph.by_uid[2].axon.port) == ("203.0.113.7", 8091)
    assert (graph.by_uid[3].axon.ip, graph.by_uid[3].axon.ip_type) == ("2001:db8::7", 6)
    assert graph.by_uid[4].axon is None
    for ip in ("127.0.0.1", "::1", "not-an-ip"):
        with pytest.raises(InvalidIp):
            await chain.serve_axon(KEYS["m3"], 1, ip, 8091)
    with pytest.raises(RateLimited) as limited:
        await chain.serve_axon(KEYS["m1"], 1, "203.0.113.8", 8091)
    assert limited.value.chain_error == "ServingRateLimitExceeded"
    chain.advance(limited.value.ready_at_block - await chain.block())
    await chain.serve_axon(KEYS["m1"], 1, "203.0.113.8", 8091)
    with pytest.raises(NotRegistered):
        await chain.serve_axon(KEYS["late"], 1, "203.0.113.9", 8091)


async def test_block_stream_yields_every_block_and_ends_on_close() -> None:
    chain = build()
    start = await chain.block()
    seen: list[int] = []
    ready = asyncio.Event()

    async def consume() -> None:
        stream = chain.blocks()
        ready.set()
        async for number in stream:
            seen.append(number)

    task = asyncio.create_task(consume())
    await ready.wait()
    await asyncio.sleep(0)  # let the consumer reach its first wait
    chain.advance(3)
    await chain.set_weights(KEYS["v1"], 1, [2, 3], [1.0, 1.0])
    chain.advance(1)
    for _ in range(100):
        if len(seen) == 5:
            break
        await asyncio.sleep(0)
    await chain.close()
    await asyncio.wait_for(task, timeout=2)
    assert seen == list(range(start + 1, start + 6))


@pytest.mark.parametrize(
    ("ip", "port", "reason"),
    [("not-an-ip", 8091, "not an IPv4"), ("127.0.0.1", 8091, "refuses"), ("255.255.255.255", 8091, "refuses"),
     ("::1", 8091, "refuses"), ("203.0.113.7", 0, "port must be"), ("203.0.113.7", 70000, "port must be")],
)
def test_axon_endpoint_refuses_what_the_runtime_refuses(ip: str, port: int, reason: str) -> None:
    from inference_subnet.chain.types import InvalidIp, axon_endpoint

    with pytest.raises(InvalidIp, match=reason):
        axon_endpoint(ip, port)
    assert axon_endpoint("203.0.113.7", 8091) == (int(ipaddress.ip_address("203.0.113.7")), 4)
    assert axon_endpoint("2001:db8::7", 1)[1] == 6
