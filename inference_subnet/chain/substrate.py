"""The ``ChainClient`` for a real subtensor node, through ``async-substrate-interface`` alone.

Connection model: **one websocket per client, one call at a time** (an ``asyncio.Lock``), and a deadline on
every call. Two tasks sharing one websocket without a lock is where subnets meet concurrency errors; a
half-open socket without a deadline is where their forward loop freezes. Here a call that misses its
deadline raises :class:`ChainTimeout` and the connection is thrown away, so the next call reconnects
(primary endpoint first, then the fallbacks) instead of waiting on a dead socket. A process whose tasks
must not queue behind each other (a validator's weight setter beside its metagraph sync) gives each
long-lived task its own client.

Bounds: waiting for the lock and the call itself each have the call's deadline; connecting has its own
deadline per endpoint (``connect_timeout``). The worst case of a call queued behind a stuck one that must
then reconnect is ``2 * call_timeout + len(endpoints) * connect_timeout``: bounded, never a hang.

After every endpoint failed, the client waits before dialling again (exponential backoff, capped), rather
than hammering a node that is restarting: a call in that window waits for the next attempt if it falls
within its deadline, and otherwise fails at once with :class:`ChainUnavailable` saying when it is due.

What the runtime can do is read from its metadata (:mod:`inference_subnet.chain.capabilities`), per
runtime version, never guessed from a spec number: the same code drives the offline spec-293 runtime in
tests and today's mainnet (timelocked commits, mechanisms).

Weights: :meth:`SubstrateChainClient.set_weights` reads the chain state once, converts the scores
(:mod:`.weights`), runs the preflight (:mod:`.preflight`, which also picks the path), and submits by that
path. Hash commits keep their reveal in memory until :meth:`reveal_pending` sends it inside the reveal
window; a restarted process loses them, and the chain then drops the commit (that set is lost, nothing
worse). Every attempt, including "too soon" and failures, is recorded as a :class:`WeightAttempt`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

from async_substrate_interface import AsyncSubstrateInterface
from async_substrate_interface.errors import StorageFunctionNotFound, SubstrateRequestException
from bittensor_wallet import Keypair
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from inference_subnet import __version__
from inference_subnet.chain import errors
from inference_subnet.chain import metagraph as decode
from inference_subnet.chain.attempts import AttemptRecorder, float_digest
from inference_subnet.chain.capabilities import Capabilities, capabilities_from_metadata
from inference_subnet.chain.commit import (
    DEFAULT_COMMIT_REVEAL_VERSION,
    EpochSchedule,
    PendingReveal,
    hash_commit,
    make_salt,
    reveal_window,
    timelocked_commit,
)
from inference_subnet.chain.preflight import Preflight, preflight
from inference_subnet.chain.types import (
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    ExtrinsicReceipt,
    Hyperparameters,
    InvalidWeights,
    Metagraph,
    RateLimited,
    UnknownSubnet,
    WeightAttempt,
    WeightPath,
    axon_endpoint,
)
from inference_subnet.chain.weights import U16_MAX, convert_weights, weights_digest

if TYPE_CHECKING:
    from async_substrate_interface.types import Runtime

    from inference_subnet.settings import ChainSettings

__all__ = [
    "NETWORKS",
    "PendingReveal",
    "SubstrateChainClient",
    "axon_version",
    "resolve_endpoints",
    "weight_call",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

NETWORKS: Mapping[str, str] = {
    "finney": "wss://entrypoint-finney.opentensor.ai:443",
    "test": "wss://test.finney.opentensor.ai:443",
    "local": "ws://127.0.0.1:9944",
}
SUBNET_API = decode.SUBNET_API
MODULE = "SubtensorModule"
_LIBRARY_INACTIVITY_TIMEOUT = 24 * 3600.0
_CONNECTION_ERRORS = (OSError, ConnectionClosed, InvalidHandshake, EOFError)


def resolve_endpoints(network: str, fallbacks: Sequence[str] = ()) -> list[str]:
    """``finney``/``test``/``local`` or a ``ws(s)://`` URL, then the fallbacks, without duplicates."""
    out: list[str] = []
    for name in (network, *fallbacks):
        url = NETWORKS.get(name.strip().lower(), name.strip())
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(
                f"unknown network {name!r}: use finney, test, local or a ws:// / wss:// URL"
            )
        if url not in out:
            out.append(url)
    return out


def axon_version() -> int:
    """The framework version as the integer ``serve_axon`` stores (``1.2.3`` -> ``1002003``)."""
    parts = [int(p) for p in __version__.split(".")[:3] if p.isdigit()]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def weight_call(
    path: WeightPath,
    *,
    netuid: int,
    mechid: int = 0,
    uids: Sequence[int] = (),
    values: Sequence[int] = (),
    version_key: int = 0,
    salt: Sequence[int] = (),
    commit: bytes | None = None,
    reveal_round: int | None = None,
    commit_reveal_version: int | None = None,
    commit_hash: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The ``SubtensorModule`` call (function name, arguments) for a weight path, as the runtime names them.

    Mechanism variants (``mecid``) are used for ``mechid > 0`` and for the ``*_mechanism_*`` paths. Pure, so
    the encodings can be checked offline against a current runtime's metadata.
    """
    mechanism = bool(mechid) or "mechanism" in path
    mech: dict[str, Any] = {"mecid": mechid} if mechanism else {}
    weights = {"uids": [int(u) for u in uids], "values": [int(v) for v in values]}
    if path in ("set_weights", "set_mechanism_weights"):
        return ("set_mechanism_weights" if mechanism else "set_weights"), {
            "netuid": netuid, **mech, "dests": weights["uids"], "weights": weights["values"],
            "version_key": int(version_key),
        }
    if path in ("commit_timelocked_weights", "commit_timelocked_mechanism_weights"):
        if commit is None or reveal_round is None:
            raise ValueError(f"{path} needs the encrypted commit and its reveal round")
        return ("commit_timelocked_mechanism_weights" if mechanism else "commit_timelocked_weights"), {
            "netuid": netuid, **mech, "commit": "0x" + bytes(commit).hex(), "reveal_round": int(reveal_round),
            "commit_reveal_version": int(commit_reveal_version or DEFAULT_COMMIT_REVEAL_VERSION),
        }
    if path == "commit_weights":
        if commit_hash is None:
            raise ValueError("commit_weights needs the commit hash")
        return ("commit_mechanism_weights" if mechanism else "commit_weights"), {
            "netuid": netuid, **mech, "commit_hash": commit_hash,
        }
    if path == "reveal_weights":
        return ("reveal_mechanism_weights" if mechanism else "reveal_weights"), {
            "netuid": netuid, **mech, **weights, "salt": [int(x) for x in salt], "version_key": int(version_key),
        }
    raise ValueError(f"unknown weight path {path!r}")


@dataclass(frozen=True)
class _WeightState:
    """What the preflight needs, read at one block."""

    block: int
    hyper: Hyperparameters
    capabilities: Capabilities
    n_neurons: int
    caller_uid: int | None
    caller_permit: bool
    last_update: int


class SubstrateChainClient:
    """A :class:`~inference_subnet.chain.types.ChainClient` over one websocket to a subtensor node."""

    def __init__(
        self,
        network: str = "local",
        *,
        fallback_endpoints: Sequence[str] = (),
        call_timeout: float = 12.0,
        connect_timeout: float | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        block_poll_interval: float = 1.0,
        block_time: float = 12.0,
        era_period: int | None = 64,
        ss58_format: int = 42,
        max_attempts_kept: int = 1000,
    ) -> None:
        self.endpoints = resolve_endpoints(network, fallback_endpoints)
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout or call_timeout
        self.block_poll_interval = block_poll_interval
        self.block_time = block_time
        self.era_period = era_period
        self.ss58_format = ss58_format
        self.endpoint: str | None = None
        """The endpoint of the open connection, if any."""
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._next_attempt = 0.0
        self._substrate: AsyncSubstrateInterface | None = None
        self._lock: asyncio.Lock | None = None
        self._capabilities: dict[Any, Capabilities] = {}
        self._struct_fields: dict[tuple[Any, str], list[str]] = {}
        self._attempts: deque[WeightAttempt] = deque(maxlen=max_attempts_kept)
        self._pending: list[PendingReveal] = []
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, chain: ChainSettings, **kwargs: Any) -> SubstrateChainClient:
        return cls(
            chain.network,
            fallback_endpoints=chain.fallback_endpoints,
            call_timeout=chain.call_timeout,
            **kwargs,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection --------------------------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[AsyncSubstrateInterface], Awaitable[T]],
                   timeout: float | None = None) -> T:
        """Run ``fn`` on the connection, alone, within the deadline; map failures to typed errors."""
        deadline = timeout or self.call_timeout
        lock = self._lock or asyncio.Lock()
        self._lock = lock
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that races with
        # the result, and a refresh task that cannot be cancelled never stops.
        try:
            async with asyncio.timeout(deadline):
                await lock.acquire()
        except TimeoutError:
            raise ChainTimeout(f"{what}: another chain call held the connection for over {deadline:g}s") from None
        try:
            substrate = await self._connect(deadline)
            try:
                async with asyncio.timeout(deadline):
                    return await fn(substrate)
            except TimeoutError:
                self._drop()
                raise ChainTimeout(
                    f"{what}: no answer from {self.endpoint or 'the chain'} within {deadline:g}s"
                ) from None
            except ChainError:
                raise
            except _CONNECTION_ERRORS as exc:
                endpoint = self.endpoint
                self._drop()
                raise ChainUnavailable(f"{what}: lost the connection to {endpoint}: {_describe(exc)}") from exc
            except (SubstrateRequestException, StorageFunctionNotFound) as exc:
                raise ChainError(f"{what}: {_describe(exc)}") from exc
        finally:
            lock.release()

    async def _connect(self, deadline: float) -> AsyncSubstrateInterface:
        """The open connection, or a new one (endpoints in order). Called with the lock held.

        Inside the backoff window a call waits for the next attempt when it falls within its deadline, and
        fails at once otherwise.
        """
        if self._substrate is not None:
            return self._substrate
        loop = asyncio.get_running_loop()
        wait = self._next_attempt - loop.time()
        if wait > deadline:
            raise ChainUnavailable(
                f"no chain endpoint reachable ({', '.join(self.endpoints)}); next attempt in {wait:.1f}s"
            )
        if wait > 0:
            await asyncio.sleep(wait)
        failures: list[str] = []
        for url in self.endpoints:
            substrate = AsyncSubstrateInterface(
                url,
                ss58_format=self.ss58_format,
                ws_shutdown_timer=None,
                # Deadlines are enforced here, per call; the library's own inactivity reconnect would
                # cut long calls (dev_newBlock, big runtime calls) short and wedge the socket.
                max_retries=1,
                retry_timeout=_LIBRARY_INACTIVITY_TIMEOUT,
            )
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._initialize(substrate)
            except TimeoutError:
                failures.append(f"{url}: no answer within {self.connect_timeout:g}s")
            except (*_CONNECTION_ERRORS, SubstrateRequestException, InvalidURI) as exc:
                failures.append(f"{url}: {_describe(exc)}")
            else:
                self._substrate, self.endpoint = substrate, url
                self._backoff, self._next_attempt = self._backoff_initial, 0.0
                self._capabilities.clear()
                self._struct_fields.clear()
                log.info("connected to %s", url)
                return substrate
            self._close_later(substrate)
        self._next_attempt = loop.time() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        raise ChainUnavailable("no chain endpoint reachable: " + "; ".join(failures))

    @staticmethod
    async def _initialize(substrate: AsyncSubstrateInterface) -> None:
        await substrate.initialize()
        # Load the runtime (metadata) now, inside the connect deadline, not in the first call's.
        await substrate.init_runtime(block_hash=substrate.startup_block_hash)

    def _drop(self) -> None:
        """Forget the connection (dead or suspect); it is closed in the background."""
        if self._substrate is not None:
            self._close_later(self._substrate)
        self._substrate, self.endpoint = None, None

    def _close_later(self, substrate: AsyncSubstrateInterface) -> None:
        async def close() -> None:
            with suppress(Exception):
                async with asyncio.timeout(5):
                    await substrate.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the connection. A socket dropped as dead gets a second to say goodbye, then is abandoned."""
        self._drop()
        if self._closing:
            _, stuck = await asyncio.wait(set(self._closing), timeout=1.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    # -- runtime introspection -----------------------------------------------------------------------------

    def _caps(self, runtime: Runtime) -> Capabilities:
        key = runtime.runtime_version
        caps = self._capabilities.get(key)
        if caps is None:
            caps = self._capabilities[key] = capabilities_from_metadata(runtime.metadata)
        return caps

    def _fields(self, runtime: Runtime, method: str) -> list[str]:
        """Field names of a runtime API's output struct (e.g. ``SelectiveMetagraph``), per runtime."""
        key = (runtime.runtime_version, method)
        names = self._struct_fields.get(key)
        if names is None:
            names = self._struct_fields[key] = decode.output_fields(runtime, method, SUBNET_API)
        return names

    async def capabilities(self) -> Capabilities:
        """Calls and runtime APIs the connected runtime declares."""

        async def read(substrate: AsyncSubstrateInterface) -> Capabilities:
            return self._caps(await substrate.init_runtime())

        return await self._run("capabilities", read)

    # -- reads ---------------------------------------------------------------------------------------------

    async def block(self) -> int:
        async def read(substrate: AsyncSubstrateInterface) -> int:
            return int(await substrate.get_block_number(None))

        return await self._run("block", read)

    async def blocks(self) -> AsyncIterator[int]:
        """Each new head's number, by polling every ``block_poll_interval`` seconds.

        Polling, not a subscription: a subscription would hold the client's one websocket that every other
        call takes turns on. Transient chain errors are logged and polling goes on, so a consumer's loop
        survives a node restart; blocks produced while the node was unreachable are skipped.
        """
        last: int | None = None
        failing = False
        while True:
            try:
                current = await self.block()
            except ChainError as exc:
                if not failing:
                    log.warning("block stream: %s (retrying)", exc)
                failing = True
            else:
                failing = False
                if last is None or current > last:
                    last = current
                    yield current
            await asyncio.sleep(self.block_poll_interval)

    async def query(self, module: str, storage: str, params: Sequence[Any] | None = None) -> Any:
        """One storage value at the head, decoded (``None`` for an absent optional value)."""

        async def read(substrate: AsyncSubstrateInterface) -> Any:
            result = await substrate.query(module, storage, list(params or []))
            return getattr(result, "value", result)

        return await self._run(f"query {module}.{storage}", read)

    async def rpc(self, method: str, params: Sequence[Any] | None = None, *, timeout: float | None = None) -> Any:
        """A raw JSON-RPC call (``dev_newBlock`` on a dev chain, ``system_health``...)."""

        async def call(substrate: AsyncSubstrateInterface) -> Any:
            return (await substrate.rpc_request(method, list(params or []))).get("result")

        return await self._run(f"rpc {method}", call, timeout)

    async def metagraph(self, netuid: int, mechid: int = 0, *, block: int | None = None) -> Metagraph:
        """The subnet's neurons at the head, or at ``block`` (the node must still hold that state)."""

        async def read(substrate: AsyncSubstrateInterface) -> Metagraph:
            block_hash = await _block_hash(substrate, block)
            return await self._read_metagraph(substrate, netuid, mechid, decode.NEURON_FIELDS, block_hash)

        return await self._run(f"metagraph(netuid={netuid})", read)

    async def metagraph_from_storage(self, netuid: int, *, block: int | None = None) -> Metagraph:
        """The metagraph from plain storage reads: the path for runtimes without the metagraph API.

        Public so tests and operators can compare it with the runtime API's answer. Stake is the hotkey's
        own alpha plus its root stake times ``TaoWeight``; stake moved between parent and child keys is not
        reflected (the runtime API accounts for it).
        """

        async def read(substrate: AsyncSubstrateInterface) -> Metagraph:
            return await self._storage_metagraph(substrate, netuid, await _block_hash(substrate, block))

        return await self._run(f"metagraph from storage (netuid={netuid})", read)

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        async def read(substrate: AsyncSubstrateInterface) -> Hyperparameters:
            block_hash = await substrate.get_chain_head()
            runtime = await substrate.init_runtime(block_hash=block_hash)
            return await self._read_hyperparameters(substrate, netuid, block_hash, self._caps(runtime))

        return await self._run(f"hyperparameters(netuid={netuid})", read)

    async def _read_metagraph(
        self, substrate: AsyncSubstrateInterface, netuid: int, mechid: int, fields: Sequence[str],
        block_hash: str | None = None,
    ) -> Metagraph:
        block_hash = block_hash or await substrate.get_chain_head()
        runtime = await substrate.init_runtime(block_hash=block_hash)
        caps = self._caps(runtime)
        if mechid == 0 and caps.has_api(SUBNET_API, "get_selective_metagraph"):
            indexes = decode.selective_indexes(self._fields(runtime, "get_selective_metagraph"), fields)
            method, params = "get_selective_metagraph", [netuid, indexes]
        elif mechid and caps.has_api(SUBNET_API, "get_selective_mechagraph"):
            indexes = decode.selective_indexes(self._fields(runtime, "get_selective_mechagraph"), fields)
            method, params = "get_selective_mechagraph", [netuid, mechid, indexes]
        elif mechid == 0 and caps.has_api(SUBNET_API, "get_metagraph"):
            method, params = "get_metagraph", [netuid]
        elif mechid and caps.has_api(SUBNET_API, "get_mechagraph"):
            method, params = "get_mechagraph", [netuid, mechid]
        elif mechid:
            raise UnknownSubnet(
                f"mechanism {mechid} of netuid {netuid}: this runtime has no mechanisms",
                chain_error="MechanismDoesNotExist",
            )
        else:
            return await self._storage_metagraph(substrate, netuid, block_hash)
        value = await substrate.runtime_call(SUBNET_API, method, params, block_hash=block_hash)
        return decode.from_runtime(value, netuid=netuid, mechid=mechid)

    async def _storage_metagraph(self, substrate: AsyncSubstrateInterface, netuid: int, block_hash: str) -> Metagraph:
        runtime = await substrate.init_runtime(block_hash=block_hash)
        if not (await substrate.query(MODULE, "NetworksAdded", [netuid], block_hash=block_hash)).value:
            raise UnknownSubnet(f"netuid {netuid} does not exist on this chain", chain_error="SubNetworkDoesNotExist")
        block = int(await substrate.get_block_number(block_hash))
        n = int((await substrate.query(MODULE, "SubnetworkN", [netuid], block_hash=block_hash)).value)
        by_uid: dict[int, str] = {}
        async for uid, hotkey in await substrate.query_map(MODULE, "Keys", [netuid], block_hash=block_hash,
                                                           page_size=1000):
            by_uid[int(getattr(uid, "value", uid))] = str(getattr(hotkey, "value", hotkey))
        hotkeys = [by_uid[uid] for uid in range(n)]
        storage = {s.name for s in runtime.metadata.get_metadata_pallet(MODULE).storage}

        async def multi(keys: list[tuple[str, list[Any]]]) -> list[Any]:
            if not keys:
                return []
            storage_keys = [
                await substrate.create_storage_key(MODULE, name, params, block_hash=block_hash)
                for name, params in keys
            ]
            found = {
                key.to_hex(): getattr(value, "value", value)
                for key, value in await substrate.query_multi(storage_keys, block_hash=block_hash)
            }
            return [found.get(key.to_hex()) for key in storage_keys]

        vectors = ("Active", "ValidatorPermit", "LastUpdate", "Emission", "Dividends", "Incentive",
                   "Consensus", "Trust")
        vector_values = dict(zip(vectors, await multi([(v, [netuid]) for v in vectors])))
        owners = await multi([("Owner", [h]) for h in hotkeys])
        axons = await multi([("Axons", [netuid, h]) for h in hotkeys])
        registered = await multi([("BlockAtRegistration", [netuid, uid]) for uid in range(n)])
        if "TotalHotkeyAlpha" in storage:
            alpha = await multi([("TotalHotkeyAlpha", [h, netuid]) for h in hotkeys])
            root = await multi([("TotalHotkeyAlpha", [h, 0]) for h in hotkeys]) if netuid else [0] * n
            tao_weight = (await multi([("TaoWeight", [])]))[0] if "TaoWeight" in storage else 0
            share = int(tao_weight or 0) / 2**64
            stake = {h: int(a or 0) + int(int(r or 0) * share) for h, a, r in zip(hotkeys, alpha, root)}
        else:
            totals = await multi([("TotalHotkeyStake", [h]) for h in hotkeys])
            stake = {h: int(t or 0) for h, t in zip(hotkeys, totals)}
        return decode.from_storage(
            netuid=netuid,
            block=block,
            hotkeys=hotkeys,
            coldkeys={h: str(o) for h, o in zip(hotkeys, owners) if o},
            axons={h: a for h, a in zip(hotkeys, axons)},
            registration_blocks=[int(r or 0) for r in registered],
            stake_rao=stake,
            active=vector_values["Active"] or (),
            validator_permit=vector_values["ValidatorPermit"] or (),
            last_update=vector_values["LastUpdate"] or (),
            emission=vector_values["Emission"] or (),
            dividends=vector_values["Dividends"] or (),
            incentive=vector_values["Incentive"] or (),
            consensus=vector_values["Consensus"] or (),
            trust=vector_values["Trust"] or (),
        )

    async def _read_hyperparameters(
        self, substrate: AsyncSubstrateInterface, netuid: int, block_hash: str, caps: Capabilities
    ) -> Hyperparameters:
        for method in ("get_subnet_hyperparams_v2", "get_subnet_hyperparams", "get_subnet_hyperparams_v3"):
            if caps.has_api(SUBNET_API, method):
                value = await substrate.runtime_call(SUBNET_API, method, [netuid], block_hash=block_hash)
                if value is None:
                    raise UnknownSubnet(
                        f"netuid {netuid} does not exist on this chain", chain_error="SubNetworkDoesNotExist"
                    )
                return _hyperparameters(netuid, value)
        if not (await substrate.query(MODULE, "NetworksAdded", [netuid], block_hash=block_hash)).value:
            raise UnknownSubnet(f"netuid {netuid} does not exist on this chain", chain_error="SubNetworkDoesNotExist")
        names = {
            "tempo": "Tempo", "weights_rate_limit": "WeightsSetRateLimit", "max_weights_limit": "MaxWeightsLimit",
            "min_allowed_weights": "MinAllowedWeights", "commit_reveal_weights_enabled": "CommitRevealWeightsEnabled",
            "commit_reveal_period": "RevealPeriodEpochs", "weights_version": "WeightsVersionKey",
            "immunity_period": "ImmunityPeriod", "serving_rate_limit": "ServingRateLimit",
            "activity_cutoff": "ActivityCutoff", "max_validators": "MaxAllowedValidators",
        }
        value = {}
        for key, storage in names.items():
            value[key] = (await substrate.query(MODULE, storage, [netuid], block_hash=block_hash)).value
        return _hyperparameters(netuid, value)

    # -- extrinsics ----------------------------------------------------------------------------------------

    async def submit(
        self,
        keypair: Keypair,
        module: str,
        function: str,
        params: Mapping[str, Any],
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> ExtrinsicReceipt:
        """Sign, submit and wait for inclusion; a refusal raises the typed error (see :mod:`.errors`).

        ``sudo`` wraps the call in ``Sudo.sudo`` (dev chains: ``//Alice``); a failed inner call raises too.
        """
        receipt, _ = await self.submit_with_events(keypair, module, function, params, sudo=sudo, timeout=timeout)
        return receipt

    async def submit_with_events(
        self,
        keypair: Keypair,
        module: str,
        function: str,
        params: Mapping[str, Any],
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> tuple[ExtrinsicReceipt, list[dict[str, Any]]]:
        """:meth:`submit`, also returning the decoded events (e.g. the netuid of ``NetworkAdded``)."""

        async def send(substrate: AsyncSubstrateInterface) -> tuple[ExtrinsicReceipt, list[dict[str, Any]]]:
            call = await substrate.compose_call(module, function, dict(params))
            return await self._submit_call(substrate, keypair, call, sudo=sudo)

        return await self._run(f"{module}.{function}", send, timeout)

    async def submit_batch(
        self,
        keypair: Keypair,
        calls: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> ExtrinsicReceipt:
        """Several calls in one extrinsic (``Utility.batch_all``: all succeed or none does)."""

        async def send(substrate: AsyncSubstrateInterface) -> ExtrinsicReceipt:
            composed = [await substrate.compose_call(m, f, dict(p)) for m, f, p in calls]
            batch = await substrate.compose_call("Utility", "batch_all", {"calls": composed})
            receipt, _ = await self._submit_call(substrate, keypair, batch, sudo=sudo)
            return receipt

        return await self._run(f"batch of {len(calls)} calls", send, timeout)

    async def constant(self, module: str, name: str) -> Any:
        """A runtime constant, decoded; ``None`` when the runtime does not declare it."""

        async def read(substrate: AsyncSubstrateInterface) -> Any:
            found = await substrate.get_constant(module, name)
            return None if found is None else getattr(found, "value", found)

        return await self._run(f"constant {module}.{name}", read)

    async def _submit(
        self,
        substrate: AsyncSubstrateInterface,
        keypair: Keypair,
        module: str,
        function: str,
        params: Mapping[str, Any],
    ) -> ExtrinsicReceipt:
        call = await substrate.compose_call(module, function, dict(params))
        receipt, _ = await self._submit_call(substrate, keypair, call)
        return receipt

    async def _submit_call(
        self, substrate: AsyncSubstrateInterface, keypair: Keypair, call: Any, *, sudo: bool = False
    ) -> tuple[ExtrinsicReceipt, list[dict[str, Any]]]:
        if sudo:
            call = await substrate.compose_call("Sudo", "sudo", {"call": call})
        # The nonce is read fresh every time: the library's cache runs ahead after a pool rejection.
        nonce = await substrate.get_account_next_index(keypair.ss58_address, use_cache=False)
        era = {"period": self.era_period} if self.era_period else None
        extrinsic = await substrate.create_signed_extrinsic(
            call=call, keypair=keypair, nonce=nonce, era=era, _skip_cache_update=True
        )
        try:
            receipt = await substrate.submit_extrinsic(extrinsic, wait_for_inclusion=True)
        except SubstrateRequestException as exc:
            raise errors.from_request_error(exc) from exc
        if not await receipt.is_success:
            raise errors.from_dispatch_error(await receipt.error_message)
        events = list(await receipt.triggered_events)
        if sudo:
            await self._raise_for_sudo(substrate, receipt.block_hash, events)
        names = tuple(f"{e['module_id']}.{e['event_id']}" for e in events)
        return ExtrinsicReceipt(extrinsic_hash=receipt.extrinsic_hash, block_hash=receipt.block_hash,
                                events=names), events

    @staticmethod
    async def _raise_for_sudo(substrate: AsyncSubstrateInterface, block_hash: str | None,
                              events: Sequence[Mapping[str, Any]]) -> None:
        """``Sudo.sudo`` succeeds even when the call inside fails: look at its ``Sudid`` event."""
        for event in events:
            if (event["module_id"], event["event_id"]) != ("Sudo", "Sudid"):
                continue
            result = event["attributes"].get("sudo_result") if isinstance(event["attributes"], Mapping) else None
            if not isinstance(result, Mapping) or "Err" not in result:
                return
            error = result["Err"]
            if isinstance(error, Mapping) and isinstance(error.get("Module"), Mapping):
                module = error["Module"]
                raw = module.get("error")
                index = bytes.fromhex(raw[2:])[0] if isinstance(raw, str) else int(raw)
                runtime = await substrate.init_runtime(block_hash=block_hash)
                found = runtime.metadata.get_module_error(module_index=int(module["index"]), error_index=index)
                raise errors.from_module_error(found.name, found.docs)
            raise ChainError(f"sudo call failed: {error}", chain_error=str(error))

    async def serve_axon(
        self, keypair: Keypair, netuid: int, ip: str, port: int, protocol: int = 4
    ) -> ExtrinsicReceipt:
        ip_int, ip_type = axon_endpoint(ip, port)
        params = {
            "netuid": netuid, "version": axon_version(), "ip": ip_int, "port": port, "ip_type": ip_type,
            "protocol": protocol, "placeholder1": 0, "placeholder2": 0,
        }
        return await self.submit(keypair, MODULE, "serve_axon", params)

    # -- weights -------------------------------------------------------------------------------------------

    def weight_attempts(self) -> Sequence[WeightAttempt]:
        return tuple(self._attempts)

    def pending_reveals(self) -> Sequence[PendingReveal]:
        """Hash commits waiting for their reveal window."""
        return tuple(self._pending)

    async def set_weights(
        self,
        keypair: Keypair,
        netuid: int,
        uids: Sequence[int],
        weights: Sequence[float],
        *,
        version_key: int | None = None,
        mechid: int = 0,
    ) -> WeightAttempt:
        requested = tuple(int(u) for u in uids)
        record = AttemptRecorder(self._attempts, netuid=netuid, mechid=mechid, uids=requested,
                                  digest=float_digest(requested, weights))
        try:
            state = await self._run(
                f"weights preflight (netuid={netuid})",
                lambda substrate: self._weight_state(substrate, netuid, keypair.ss58_address, mechid),
            )
        except ChainError as exc:
            record.failed(exc)
            raise
        record.block = state.block
        hyper = state.hyper
        version = hyper.weights_version if version_key is None else int(version_key)

        def check_against_chain(candidate: Sequence[int]) -> Preflight:
            return preflight(
                hyper=hyper, block=state.block, caller_uid=state.caller_uid, caller_permit=state.caller_permit,
                last_update=state.last_update, uids=candidate, n_neurons=state.n_neurons,
                capabilities=state.capabilities, mechid=mechid, version_key=version,
            )

        # Registration, permit, version and rate limit first, on the uids as asked; then the conversion
        # (which drops zeros), checked again as it will be sent.
        check = check_against_chain(requested)
        record.path = check.path
        try:
            check.raise_for_problem()
            if not check.too_soon:
                dest, values = convert_weights(
                    requested, weights, n_neurons=state.n_neurons, max_weight_limit=hyper.max_weights_limit,
                    min_allowed_weights=hyper.min_allowed_weights, self_uid=state.caller_uid,
                )
                record.uids, record.digest = tuple(dest), weights_digest(dest, values)
                check = check_against_chain(dest)
                check.raise_for_problem()
        except ChainError as exc:
            record.failed(exc)
            raise
        if check.too_soon:
            return record.too_soon(check.ready_at_block)
        if check.path is None:  # preflight reports this as a problem; kept for type narrowing
            raise ChainError("the runtime offers no way to set weights on this subnet")
        path: WeightPath = check.path
        try:
            receipt, pending = await self._run(
                f"{path} (netuid={netuid})",
                lambda substrate: self._send_weights(substrate, keypair, path, netuid, mechid, dest, values,
                                                     version, state),
            )
        except RateLimited as exc:
            # the chain disagreed with the preflight (another set raced this one): same rule for "when"
            ready = exc.ready_at_block or state.last_update + hyper.weights_rate_limit - 1
            return record.too_soon(max(ready, state.block + 1), error=str(exc))
        except ChainError as exc:
            record.failed(exc)
            raise
        if pending is not None:
            self._pending.append(pending)
        return record.success(receipt.extrinsic_hash)

    async def _weight_state(
        self, substrate: AsyncSubstrateInterface, netuid: int, hotkey: str, mechid: int
    ) -> _WeightState:
        block_hash = await substrate.get_chain_head()
        runtime = await substrate.init_runtime(block_hash=block_hash)
        caps = self._caps(runtime)
        hyper = await self._read_hyperparameters(substrate, netuid, block_hash, caps)
        graph = await self._read_metagraph(substrate, netuid, mechid, decode.WEIGHT_STATE_FIELDS, block_hash)
        caller = graph.by_hotkey.get(hotkey)
        return _WeightState(
            block=graph.block,
            hyper=hyper,
            capabilities=caps,
            n_neurons=len(graph.neurons),
            caller_uid=caller.uid if caller else None,
            caller_permit=bool(caller and caller.validator_permit),
            last_update=caller.last_update if caller else 0,
        )

    async def _send_weights(
        self,
        substrate: AsyncSubstrateInterface,
        keypair: Keypair,
        path: WeightPath,
        netuid: int,
        mechid: int,
        uids: list[int],
        values: list[int],
        version: int,
        state: _WeightState,
    ) -> tuple[ExtrinsicReceipt, PendingReveal | None]:
        hyper = state.hyper
        if path in ("commit_timelocked_weights", "commit_timelocked_mechanism_weights"):
            schedule = await self._epoch_schedule(substrate, netuid)
            try:
                commit, reveal_round = timelocked_commit(
                    hotkey=keypair.public_key, uids=uids, values=values, version_key=version, tempo=hyper.tempo,
                    current_block=state.block, netuid=netuid, reveal_period_epochs=hyper.commit_reveal_period,
                    block_time=self.block_time, schedule=schedule,
                )
            except ValueError as exc:  # too many weights for one commit, a subnet without epochs...
                raise InvalidWeights(f"cannot build the timelocked commit: {exc}") from exc
            function, params = weight_call(
                path, netuid=netuid, mechid=mechid, commit=commit, reveal_round=reveal_round,
                commit_reveal_version=await self._commit_reveal_version(substrate),
            )
            return await self._submit(substrate, keypair, MODULE, function, params), None
        if path != "commit_weights":
            function, params = weight_call(path, netuid=netuid, mechid=mechid, uids=uids, values=values,
                                           version_key=version)
            return await self._submit(substrate, keypair, MODULE, function, params), None
        salt = make_salt()
        commit_hash = hash_commit(account=keypair.public_key, netuid=netuid, uids=uids, values=values,
                                  salt=salt, version_key=version, mechid=mechid or None)
        function, params = weight_call(path, netuid=netuid, mechid=mechid, commit_hash=commit_hash)
        receipt = await self._submit(substrate, keypair, MODULE, function, params)
        commit_block = await self._receipt_block(substrate, receipt, state.block)
        first, last = reveal_window(netuid, hyper.tempo, hyper.commit_reveal_period, commit_block)
        pending = PendingReveal(
            keypair=keypair, netuid=netuid, mechid=mechid, uids=tuple(uids), values=tuple(values),
            salt=tuple(salt), version_key=version, commit_block=commit_block, first_block=first,
            last_block=last, digest=weights_digest(uids, values),
        )
        return receipt, pending

    async def _commit_reveal_version(self, substrate: AsyncSubstrateInterface) -> int:
        """The version tag the runtime expects on timelocked commits (stored on current runtimes)."""
        if "CommitRevealWeightsVersion" not in await self._storage_names(substrate):
            return DEFAULT_COMMIT_REVEAL_VERSION
        value = (await substrate.query(MODULE, "CommitRevealWeightsVersion", [])).value
        return int(value or DEFAULT_COMMIT_REVEAL_VERSION)

    async def _epoch_schedule(self, substrate: AsyncSubstrateInterface, netuid: int) -> EpochSchedule | None:
        """The subnet's stateful epoch schedule where the runtime keeps one (``None``: legacy modulo epochs)."""
        if "LastEpochBlock" not in await self._storage_names(substrate):
            return None
        values = [
            (await substrate.query(MODULE, name, [netuid])).value
            for name in ("LastEpochBlock", "SubnetEpochIndex", "BlocksSinceLastStep", "PendingEpochAt")
        ]
        last, index, since, pending = (int(v or 0) for v in values)
        return EpochSchedule(last_epoch_block=last, subnet_epoch_index=index, blocks_since_last_step=since,
                             pending_epoch_at=pending)

    @staticmethod
    async def _storage_names(substrate: AsyncSubstrateInterface) -> set[str]:
        runtime = await substrate.init_runtime()
        return {item.name for item in runtime.metadata.get_metadata_pallet(MODULE).storage}

    @staticmethod
    async def _receipt_block(substrate: AsyncSubstrateInterface, receipt: ExtrinsicReceipt, fallback: int) -> int:
        if receipt.block_hash is None:
            return fallback
        return int(await substrate.get_block_number(receipt.block_hash))

    async def reveal_pending(self) -> list[WeightAttempt]:
        """Reveal every hash commit whose window is open; drop (and record) those that expired.

        Call it every few blocks (a validator's weight loop does); commits not yet revealable stay pending.
        """
        if not self._pending:
            return []
        block = await self.block()
        made: list[WeightAttempt] = []
        for pending in list(self._pending):
            if block < pending.first_block:
                continue
            record = AttemptRecorder(self._attempts, netuid=pending.netuid, mechid=pending.mechid,
                                      uids=pending.uids, digest=pending.digest, block=block)
            record.path = "reveal_weights"
            if block > pending.last_block:
                self._pending.remove(pending)
                made.append(record.failed(ChainError(
                    f"commit of block {pending.commit_block} expired at block {pending.last_block} before it "
                    "was revealed", chain_error="ExpiredWeightCommit")))
                continue
            function, params = weight_call(
                "reveal_weights", netuid=pending.netuid, mechid=pending.mechid, uids=pending.uids,
                values=pending.values, salt=pending.salt, version_key=pending.version_key,
            )
            try:
                receipt = await self.submit(pending.keypair, MODULE, function, params)
            except (ChainTimeout, ChainUnavailable) as exc:
                made.append(record.failed(exc))  # still inside the window: kept for the next call
                continue
            except ChainError as exc:
                self._pending.remove(pending)
                made.append(record.failed(exc))
                continue
            self._pending.remove(pending)
            made.append(record.success(receipt.extrinsic_hash))
        return made


def _hyperparameters(netuid: int, value: Mapping[str, Any]) -> Hyperparameters:
    def num(key: str, default: int = 0) -> int:
        raw = value.get(key)
        return default if raw is None else int(raw)

    return Hyperparameters(
        netuid=netuid,
        tempo=num("tempo"),
        weights_rate_limit=num("weights_rate_limit"),
        max_weights_limit=num("max_weights_limit", U16_MAX) / U16_MAX,
        min_allowed_weights=num("min_allowed_weights"),
        commit_reveal_enabled=bool(value.get("commit_reveal_weights_enabled")),
        commit_reveal_period=num("commit_reveal_period", 1),
        weights_version=num("weights_version"),
        immunity_period=num("immunity_period"),
        serving_rate_limit=num("serving_rate_limit"),
        activity_cutoff=num("activity_cutoff"),
        max_validators=num("max_validators", 64),
    )


async def _block_hash(substrate: AsyncSubstrateInterface, block: int | None) -> str:
    if block is None:
        return await substrate.get_chain_head()
    found = await substrate.get_block_hash(block)
    if not found:
        raise ChainError(f"block {block} is not known to this node")
    return found


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
