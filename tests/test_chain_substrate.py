"""The Substrate client against a real subtensor runtime (spec 293, offline; see ../shared/chain).

Every test works on subnets it registers itself (fresh keys per run), so runs sharing one dev chain do not
see each other. One subnet serves most tests; settings a test changes (rate limit, commit-reveal, version
key) are restored by that test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bittensor_wallet import Keypair
from typer.testing import CliRunner

from inference_subnet.chain.commit import hash_commit
from inference_subnet.chain.localchain import (
    SubnetHyper,
    advance_blocks,
    burned_register,
    dev_keypair,
    prepare_subnet,
    sudo_calls,
)
from inference_subnet.chain.substrate import MODULE, SubstrateChainClient
from inference_subnet.chain.types import (
    AxonInfo,
    ChainError,
    InvalidIp,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
)
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.chain.weights import convert_weights
from inference_subnet.cli.main import app
from inference_subnet.localnet.ports import free_port

pytestmark = pytest.mark.chain

RUN = uuid.uuid4().hex[:8]
TIMEOUT = 60.0
"""Deadline per call in these tests: generous, the shared dev chain builds a block in about a second."""


def uri(name: str) -> str:
    return f"//isn-{RUN}-{name}"


def key(name: str) -> Keypair:
    return dev_keypair(uri(name))


@dataclass(frozen=True)
class Subnet:
    netuid: int
    owner: Keypair
    validator: Keypair
    miners: tuple[Keypair, ...]


@pytest.fixture(scope="module")
async def client(chain_url: str) -> AsyncIterator[SubstrateChainClient]:
    async with SubstrateChainClient(chain_url, call_timeout=TIMEOUT) as chain:
        yield chain


@pytest.fixture(scope="module")
async def subnet(client: SubstrateChainClient) -> Subnet:
    """Owner (uid 0), one staked validator (uid 1, the only permit), three miners (uids 2-4); plain weights,
    no rate limit."""
    owner, validator = key("owner"), key("validator")
    miners = (key("m1"), key("m2"), key("m3"))
    netuid = await prepare_subnet(
        client, owner=owner, validators=[(validator, 100.0)], miners=miners,
        hyper=SubnetHyper(tempo=4, max_allowed_validators=1),
    )
    return Subnet(netuid, owner, validator, miners)


async def set_hyper(client: SubstrateChainClient, netuid: int, **settings: object) -> None:
    """Change only the given settings of a subnet (sudo)."""
    unset: dict[str, object] = {"weights_rate_limit": None, "commit_reveal": None, "serving_rate_limit": None,
                                "max_registrations_per_block": None, "target_registrations_per_interval": None}
    await sudo_calls(client, SubnetHyper(**{**unset, **settings}).calls(netuid))  # type: ignore[arg-type]


async def test_metagraph_of_a_prepared_subnet(client: SubstrateChainClient, subnet: Subnet) -> None:
    graph = await client.metagraph(subnet.netuid)
    hotkeys = [subnet.owner, subnet.validator, *subnet.miners]
    assert [n.hotkey for n in graph.neurons] == [k.ss58_address for k in hotkeys]
    assert all(n.coldkey == subnet.owner.ss58_address for n in graph.neurons)
    validator = graph.by_hotkey[subnet.validator.ss58_address]
    assert validator.uid == 1 and validator.validator_permit
    assert validator.stake > 50  # 100 TAO staked, less the pool's slippage, in alpha
    assert not any(graph.by_uid[uid].validator_permit for uid in (2, 3, 4))
    assert all(0 < n.registration_block <= graph.block for n in graph.neurons)
    assert validator.identity == f"{validator.hotkey}@{validator.registration_block}"
    assert graph.netuid == subnet.netuid and graph.mechid == 0


async def test_metagraph_equals_raw_storage(client: SubstrateChainClient, subnet: Subnet) -> None:
    head = await client.block()
    graph = await client.metagraph(subnet.netuid, block=head)
    from_storage = await client.metagraph_from_storage(subnet.netuid, block=head)
    assert graph.block == head
    assert from_storage == graph  # the storage fallback decodes to the very same snapshot

    netuid = subnet.netuid
    permits = await client.query(MODULE, "ValidatorPermit", [netuid])
    last_update = await client.query(MODULE, "LastUpdate", [netuid])
    for neuron in graph.neurons:
        assert await client.query(MODULE, "Keys", [netuid, neuron.uid]) == neuron.hotkey
        assert await client.query(MODULE, "Uids", [netuid, neuron.hotkey]) == neuron.uid
        assert await client.query(MODULE, "BlockAtRegistration", [netuid, neuron.uid]) == neuron.registration_block
        assert await client.query(MODULE, "Owner", [neuron.hotkey]) == neuron.coldkey
        assert permits[neuron.uid] == neuron.validator_permit
        assert last_update[neuron.uid] == neuron.last_update


async def test_serve_axon_ipv4_and_ipv6(client: SubstrateChainClient, subnet: Subnet) -> None:
    m1, m2, _ = subnet.miners
    await client.serve_axon(m1, subnet.netuid, "203.0.113.7", 8091)
    await client.serve_axon(m2, subnet.netuid, "2001:db8::7", 9000, protocol=4)
    graph = await client.metagraph(subnet.netuid)
    axon1, axon2 = graph.by_hotkey[m1.ss58_address].axon, graph.by_hotkey[m2.ss58_address].axon
    assert axon1 is not None and (axon1.ip, axon1.port, axon1.ip_type) == ("203.0.113.7", 8091, 4)
    assert axon2 is not None and (axon2.ip, axon2.port, axon2.ip_type) == ("2001:db8::7", 9000, 6)
    assert axon2.url() == "http://[2001:db8::7]:9000"
    assert axon1.url(ip_override="127.0.0.1") == "http://127.0.0.1:8091"
    raw = await client.query(MODULE, "Axons", [subnet.netuid, m2.ss58_address])
    assert (raw["ip"], raw["ip_type"]) == (AxonInfo.ip_to_int("2001:db8::7")[0], 6)
    assert graph.by_hotkey[subnet.validator.ss58_address].axon is None  # never served

    with pytest.raises(InvalidIp) as refused:
        await client.serve_axon(m1, subnet.netuid, "127.0.0.1", 8091)
    assert refused.value.chain_error == "InvalidIpAddress"


async def test_set_weights_and_read_them_back(client: SubstrateChainClient, subnet: Subnet) -> None:
    hyper = await client.hyperparameters(subnet.netuid)
    assert (hyper.weights_rate_limit, hyper.commit_reveal_enabled, hyper.tempo) == (0, False, 4)
    attempt = await client.set_weights(subnet.validator, subnet.netuid, [2, 3, 4], [0.2, 0.3, 0.5])
    assert attempt.outcome == "success" and attempt.path == "set_weights"
    assert attempt.extrinsic_hash and attempt.extrinsic_hash.startswith("0x")
    assert attempt in client.weight_attempts()

    uids, values = convert_weights([2, 3, 4], [0.2, 0.3, 0.5], n_neurons=5, max_weight_limit=hyper.max_weights_limit,
                                   min_allowed_weights=hyper.min_allowed_weights)
    stored = await client.query(MODULE, "Weights", [subnet.netuid, 1])
    assert [tuple(pair) for pair in stored] == list(zip(uids, values))
    assert values[-1] == 65535 and attempt.uids == tuple(uids)
    graph = await client.metagraph(subnet.netuid)
    assert graph.by_uid[1].last_update > attempt.block  # included in a later block than the one read


async def test_too_soon_is_an_expected_outcome(client: SubstrateChainClient, subnet: Subnet) -> None:
    await set_hyper(client, subnet.netuid, weights_rate_limit=1000)
    try:
        last_update = (await client.metagraph(subnet.netuid)).by_uid[1].last_update
        attempt = await client.set_weights(subnet.validator, subnet.netuid, [2, 3], [1.0, 1.0])
        assert attempt.outcome == "too_soon" and attempt.extrinsic_hash is None
        assert attempt.ready_at_block == last_update + 1000 - 1
        assert client.weight_attempts()[-1] == attempt
        # What the runtime itself says when a set is sent anyway: a typed rate limit, not a failure.
        with pytest.raises(RateLimited) as limited:
            await client.submit(subnet.validator, MODULE, "set_weights",
                                {"netuid": subnet.netuid, "dests": [2], "weights": [1], "version_key": 0})
        assert limited.value.chain_error == "SettingWeightsTooFast"
    finally:
        await set_hyper(client, subnet.netuid, weights_rate_limit=0)


async def test_registration_and_permit_errors_are_typed(client: SubstrateChainClient, subnet: Subnet) -> None:
    netuid, stranger, miner = subnet.netuid, key("stranger"), subnet.miners[2]
    with pytest.raises(NotRegistered) as not_registered:
        await client.set_weights(stranger, netuid, [2], [1.0])
    assert not_registered.value.chain_error == "HotKeyNotRegisteredInSubNet"
    assert client.weight_attempts()[-1].outcome == "rejected"
    with pytest.raises(NotRegistered):  # the runtime's own verdict, when the preflight is bypassed
        await client.submit(stranger, MODULE, "set_weights",
                            {"netuid": netuid, "dests": [2], "weights": [1], "version_key": 0})

    with pytest.raises(NoValidatorPermit) as no_permit:
        await client.set_weights(miner, netuid, [2, 3], [1.0, 1.0])
    assert no_permit.value.chain_error == "NeuronNoValidatorPermit"
    with pytest.raises(NoValidatorPermit) as chain_says:
        await client.submit(miner, MODULE, "set_weights",
                            {"netuid": netuid, "dests": [2], "weights": [1], "version_key": 0})
    assert chain_says.value.chain_error == "NeuronNoValidatorPermit"

    with pytest.raises(InvalidWeights) as bad_uid:
        await client.submit(subnet.validator, MODULE, "set_weights",
                            {"netuid": netuid, "dests": [2, 99], "weights": [1, 1], "version_key": 0})
    assert bad_uid.value.chain_error == "UidVecContainInvalidOne"
    with pytest.raises(InvalidWeights):
        await client.set_weights(subnet.validator, netuid, [2, 99], [1.0, 1.0])


async def test_version_key_is_checked(client: SubstrateChainClient, subnet: Subnet) -> None:
    await set_hyper(client, subnet.netuid, weights_version=7)
    try:
        with pytest.raises(InvalidWeights) as old_key:
            await client.set_weights(subnet.validator, subnet.netuid, [2], [1.0], version_key=3)
        assert old_key.value.chain_error == "IncorrectWeightVersionKey"
        with pytest.raises(InvalidWeights) as chain_says:
            await client.submit(subnet.validator, MODULE, "set_weights",
                                {"netuid": subnet.netuid, "dests": [2], "weights": [1], "version_key": 3})
        assert chain_says.value.chain_error == "IncorrectWeightVersionKey"
        ok = await client.set_weights(subnet.validator, subnet.netuid, [2], [1.0])  # default: the subnet's
        assert ok.outcome == "success"
    finally:
        await set_hyper(client, subnet.netuid, weights_version=0)


async def test_unknown_subnet_and_mechanism(client: SubstrateChainClient, subnet: Subnet) -> None:
    for read in (client.metagraph(4000), client.hyperparameters(4000), client.metagraph_from_storage(4000)):
        with pytest.raises(UnknownSubnet):
            await read
    with pytest.raises(UnknownSubnet):
        await client.set_weights(subnet.validator, 4000, [0], [1.0])
    with pytest.raises(UnknownSubnet) as no_mechanisms:  # spec 293 predates mechanisms
        await client.metagraph(subnet.netuid, mechid=1)
    assert no_mechanisms.value.chain_error == "MechanismDoesNotExist"


async def test_hash_commit_accepted_then_revealed(client: SubstrateChainClient, subnet: Subnet) -> None:
    """Commit-reveal on a runtime without timelocked commits: the hash commit the runtime can verify."""
    caps = await client.capabilities()
    assert not caps.has_call(MODULE, "commit_timelocked_weights")  # read from metadata, not assumed
    netuid, validator = subnet.netuid, subnet.validator
    await set_hyper(client, netuid, commit_reveal=True)
    try:
        attempt = await client.set_weights(validator, netuid, [2, 3, 4], [0.5, 0.25, 0.25])
        assert (attempt.outcome, attempt.path) == ("success", "commit_weights")
        [pending] = client.pending_reveals()
        commits = await client.query(MODULE, "WeightCommits", [netuid, validator.ss58_address])
        expected = hash_commit(account=validator.public_key, netuid=netuid, uids=list(pending.uids),
                               values=list(pending.values), salt=list(pending.salt), version_key=0)
        assert [c[0] for c in commits] == [expected]
        # spec 293 stores (hash, commit block, first reveal block, last reveal block): our window agrees
        assert tuple(commits[0][1:]) == (pending.commit_block, pending.first_block, pending.last_block)

        assert await client.reveal_pending() == []  # too early: nothing sent, still pending
        head = await client.block()
        await advance_blocks(client, pending.first_block - head)
        [revealed] = await client.reveal_pending()
        assert (revealed.outcome, revealed.path) == ("success", "reveal_weights")
        assert client.pending_reveals() == ()
        stored = await client.query(MODULE, "Weights", [netuid, 1])
        assert [tuple(pair) for pair in stored] == list(zip(pending.uids, pending.values))
    finally:
        await set_hyper(client, netuid, commit_reveal=False)


async def test_reregistered_uid_is_a_new_identity(client: SubstrateChainClient) -> None:
    """A full subnet: a new hotkey takes a uid; the evicted hotkey registering again gets a new block."""
    owner, a, b, newcomer = key("re-owner"), key("re-a"), key("re-b"), key("re-new")
    netuid = await prepare_subnet(client, owner=owner, miners=[a, b],
                                  hyper=SubnetHyper(max_allowed_uids=3, immunity_period=0))
    before = await client.metagraph(netuid)
    assert len(before.neurons) == 3

    await burned_register(client, owner, netuid, newcomer.ss58_address)
    after = await client.metagraph(netuid)
    assert len(after.neurons) == 3
    taken = after.by_hotkey[newcomer.ss58_address]
    evicted = before.by_uid[taken.uid]
    assert evicted.hotkey not in after.by_hotkey
    assert taken.identity != evicted.identity and taken.registration_block > evicted.registration_block

    # The evicted hotkey comes back: same hotkey, new registration block, so a new identity (no old scores).
    await burned_register(client, owner, netuid, evicted.hotkey)
    again = (await client.metagraph(netuid)).by_hotkey[evicted.hotkey]
    assert again.hotkey == evicted.hotkey and again.registration_block > evicted.registration_block
    assert again.identity != evicted.identity


async def test_fallback_endpoint_and_concurrent_callers(chain_url: str, subnet: Subnet) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    async with SubstrateChainClient(dead, fallback_endpoints=[chain_url], call_timeout=TIMEOUT) as chain:
        results = await asyncio.gather(
            *(chain.metagraph(subnet.netuid) for _ in range(4)),
            *(chain.block() for _ in range(4)),
            *(chain.hyperparameters(subnet.netuid) for _ in range(2)),
        )
        assert chain.endpoint == chain_url
        graphs = results[:4]
        assert {tuple(n.hotkey for n in g.neurons) for g in graphs} == {tuple(n.hotkey for n in graphs[0].neurons)}
        assert all(isinstance(b, int) and b > 0 for b in results[4:8])


async def test_block_stream(chain_url: str) -> None:
    async with SubstrateChainClient(chain_url, call_timeout=TIMEOUT, block_poll_interval=0.1) as chain:
        stream = chain.blocks()
        try:
            first = await anext(stream)
            await advance_blocks(chain, 1)
            second = await asyncio.wait_for(anext(stream), TIMEOUT)
            assert second > first
        finally:
            await stream.aclose()


async def test_capabilities_come_from_metadata(client: SubstrateChainClient) -> None:
    caps = await client.capabilities()
    assert caps.has_call(MODULE, "set_weights") and caps.has_call(MODULE, "commit_weights")
    assert not caps.has_call(MODULE, "set_mechanism_weights")
    assert caps.has_api("SubnetInfoRuntimeApi", "get_selective_metagraph")
    with pytest.raises(ChainError):
        await client.query(MODULE, "NoSuchStorageItem", [])


# -- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wallet files holding the subnet's validator and miner hotkeys, and a stranger's."""
    root = tmp_path_factory.mktemp("wallets")
    for name, hotkey_uri in {"validator": uri("validator"), "miner": uri("m1"), "stranger": uri("stranger")}.items():
        create_wallet(root, name, "default", coldkey_uri=hotkey_uri + "-cold", hotkey_uri=hotkey_uri)
    return root


Flags = Callable[[str], list[str]]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["chain", *args])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture
def signed_as(subnet: Subnet, chain_url: str, wallets: Path) -> Flags:
    """CLI flags to act as one of the wallets on the test subnet."""

    def flags(name: str) -> list[str]:
        return ["--network", chain_url, "--netuid", str(subnet.netuid), "--wallet-path", str(wallets),
                "--wallet-name", name]

    return flags


def test_cli_metagraph_and_hyperparameters(subnet: Subnet, chain_url: str) -> None:
    target = ["--network", chain_url, "--netuid", str(subnet.netuid)]
    code, output = invoke("metagraph", *target, "--json")
    assert code == 0, output
    graph = json.loads(output[output.index("{"):])
    assert graph["netuid"] == subnet.netuid and len(graph["neurons"]) == 5
    assert graph["neurons"][1]["validator_permit"] is True

    code, output = invoke("metagraph", *target)
    assert code == 0 and f"netuid {subnet.netuid}" in output

    code, output = invoke("hyperparameters", *target, "--json")
    assert code == 0, output
    assert json.loads(output[output.index("{"):])["tempo"] == 4


def test_cli_serve_axon_and_set_weights(signed_as: Flags) -> None:
    code, output = invoke("serve-axon", "--ip", "198.51.100.4", "--port", "8091", *signed_as("miner"))
    assert code == 0 and "198.51.100.4:8091 served" in output, output
    code, output = invoke("serve-axon", "--ip", "127.0.0.1", "--port", "8091", *signed_as("miner"))
    assert code == 2 and "--ip/--port" in output and "InvalidIpAddress" in output

    code, output = invoke("set-weights", "--uids", "2,3", "--weights", "1,2", *signed_as("validator"))
    assert code == 0, output
    attempt = json.loads(output[output.index("{"):output.rindex("}") + 1])
    assert attempt["outcome"] == "success" and attempt["path"] == "set_weights"


def test_cli_refusals_name_what_to_fix(signed_as: Flags, chain_url: str) -> None:
    code, output = invoke("set-weights", "--uids", "2", "--weights", "1", *signed_as("stranger"))
    assert code == 2 and "--wallet.hotkey" in output and "not registered" in output, output

    code, output = invoke("set-weights", "--uids", "1", "--weights", "1", *signed_as("miner"))
    assert code == 2 and "no validator permit" in output, output

    code, output = invoke("set-weights", "--uids", "2,3", "--weights", "1", *signed_as("validator"))
    assert code == 2 and "--uids/--weights" in output

    code, output = invoke("set-weights", "--uids", "2", "--weights", "1", *signed_as("nobody"))
    assert code == 2 and "--wallet.name/--wallet.hotkey/--wallet.path" in output

    code, output = invoke("metagraph", "--network", chain_url, "--netuid", "4000")
    assert code == 2 and "--netuid 4000" in output and "does not exist" in output

    dead = f"ws://127.0.0.1:{free_port()}"
    code, output = invoke("metagraph", "--network", dead, "--netuid", "1")
    assert code == 2 and f"--subtensor.network {dead}: chain unreachable" in output


async def test_cli_rate_limited_set_exits_3(
    client: SubstrateChainClient, subnet: Subnet, signed_as: Flags
) -> None:
    await set_hyper(client, subnet.netuid, weights_rate_limit=1000)
    try:
        last = (await client.query(MODULE, "LastUpdate", [subnet.netuid]))[1]
        # the CLI runs its own event loop: run it in a thread, away from the test's loop
        code, output = await asyncio.to_thread(
            invoke, "set-weights", "--uids", "2", "--weights", "1", *signed_as("validator"))
    finally:
        await set_hyper(client, subnet.netuid, weights_rate_limit=0)
    assert code == 3 and f"from block {last + 1000 - 1}" in output, output
