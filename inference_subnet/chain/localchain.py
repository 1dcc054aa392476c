"""Development helpers for a dev subtensor chain: register a subnet and its neurons in one call.

Made for the offline runtime in ``../shared/chain`` (``//Alice`` is sudo, blocks are built on demand with
``dev_newBlock``) and usable on any localnet whose sudo key you hold. Never point these at mainnet: they
sign sudo calls and move funds between dev accounts.

Several test runs may share one dev chain at once, so :func:`prepare_subnet` touches only the subnet it
registers, apart from two global settings that make registering cheap and repeatable (network rate limit
0, lock-cost reduction interval 1: without it every registration doubles the next one's lock cost).
Transactions of one sudo key from concurrent runs can collide on a nonce; those are retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bittensor_wallet import Keypair

from inference_subnet.chain.substrate import MODULE, SubstrateChainClient
from inference_subnet.chain.types import RAO_PER_TAO, ChainError, ExtrinsicReceipt

__all__ = [
    "SubnetHyper",
    "add_stake",
    "advance_blocks",
    "balance_tao",
    "burned_register",
    "dev_keypair",
    "fund",
    "prepare_subnet",
    "set_balance",
    "sudo_calls",
    "tao_to_rao",
]

SUDO_URI = "//Alice"
_NONCE_RACES = ("InvalidStale", "InvalidFuture", "PriorityTooLow", "InvalidExhaustsResources")


def dev_keypair(uri: str) -> Keypair:
    """A keypair from a dev URI (``//Alice``, ``//Bob``, ``//miner-3``...). Development only."""
    return Keypair.create_from_uri(uri)


def tao_to_rao(tao: float) -> int:
    return round(tao * RAO_PER_TAO)


@dataclass(frozen=True)
class SubnetHyper:
    """Hyperparameters :func:`prepare_subnet` sets on a new subnet (``None``: the runtime's default).

    The defaults suit tests: no weights rate limit, plain weights, and registrations not throttled.
    """

    tempo: int | None = None
    weights_rate_limit: int | None = 0
    commit_reveal: bool | None = False
    commit_reveal_period: int | None = None
    max_allowed_uids: int | None = None
    immunity_period: int | None = None
    min_allowed_weights: int | None = None
    max_weight_limit: int | None = None
    """u16 form (65535 = 100%)."""
    weights_version: int | None = None
    serving_rate_limit: int | None = 0
    activity_cutoff: int | None = None
    max_allowed_validators: int | None = None
    max_registrations_per_block: int | None = 64
    target_registrations_per_interval: int | None = 64

    def calls(self, netuid: int) -> list[tuple[str, dict[str, Any]]]:
        """The ``AdminUtils`` calls (function, params) that apply these settings."""
        table: list[tuple[Any, str, str]] = [
            (self.tempo, "sudo_set_tempo", "tempo"),
            (self.weights_rate_limit, "sudo_set_weights_set_rate_limit", "weights_set_rate_limit"),
            (self.commit_reveal, "sudo_set_commit_reveal_weights_enabled", "enabled"),
            (self.commit_reveal_period, "sudo_set_commit_reveal_weights_interval", "interval"),
            (self.max_allowed_uids, "sudo_set_max_allowed_uids", "max_allowed_uids"),
            (self.immunity_period, "sudo_set_immunity_period", "immunity_period"),
            (self.min_allowed_weights, "sudo_set_min_allowed_weights", "min_allowed_weights"),
            (self.max_weight_limit, "sudo_set_max_weight_limit", "max_weight_limit"),
            (self.weights_version, "sudo_set_weights_version_key", "weights_version_key"),
            (self.serving_rate_limit, "sudo_set_serving_rate_limit", "serving_rate_limit"),
            (self.activity_cutoff, "sudo_set_activity_cutoff", "activity_cutoff"),
            (self.max_allowed_validators, "sudo_set_max_allowed_validators", "max_allowed_validators"),
            (self.max_registrations_per_block, "sudo_set_max_registrations_per_block",
             "max_registrations_per_block"),
            (self.target_registrations_per_interval, "sudo_set_target_registrations_per_interval",
             "target_registrations_per_interval"),
        ]
        return [(fn, {"netuid": netuid, arg: value}) for value, fn, arg in table if value is not None]


async def _retry_nonce(make: Any, attempts: int = 5) -> Any:
    """Retry a submission that lost a nonce race with another run signing with the same dev key."""
    for attempt in range(attempts):
        try:
            return await make()
        except ChainError as exc:
            if exc.chain_error not in _NONCE_RACES or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def sudo_calls(
    chain: SubstrateChainClient, calls: Sequence[tuple[str, Mapping[str, Any]]], *, sudo: Keypair | None = None
) -> ExtrinsicReceipt | None:
    """Apply ``AdminUtils`` calls as sudo in one block (``Utility.batch_all``: all or none)."""
    if not calls:
        return None
    key = sudo or dev_keypair(SUDO_URI)

    async def send() -> ExtrinsicReceipt:
        return await chain.submit_batch(key, [("AdminUtils", fn, dict(params)) for fn, params in calls], sudo=True)

    return await _retry_nonce(send)


async def advance_blocks(chain: SubstrateChainClient, n: int) -> int:
    """Build ``n`` blocks now (``dev_newBlock``) and return the new head. Dev chains only."""
    if n > 0:
        await chain.rpc("dev_newBlock", [{"count": n}], timeout=max(chain.call_timeout, 10 + 1.5 * n))
    return await chain.block()


async def balance_tao(chain: SubstrateChainClient, ss58: str) -> float:
    account = await chain.query("System", "Account", [ss58])
    return int(account["data"]["free"]) / RAO_PER_TAO


async def fund(chain: SubstrateChainClient, payer: Keypair, dest_ss58: str, tao: float) -> ExtrinsicReceipt:
    """Transfer ``tao`` from ``payer`` to ``dest_ss58``."""
    return await _retry_nonce(lambda: chain.submit(
        payer, "Balances", "transfer_keep_alive", {"dest": dest_ss58, "value": tao_to_rao(tao)}
    ))


async def set_balance(chain: SubstrateChainClient, ss58: str, tao: float, *, sudo: Keypair | None = None) -> None:
    """Set an account's free balance by sudo (``Balances.force_set_balance``). Dev chains only.

    Funding test accounts this way mints instead of transferring: repeated runs on a long-lived dev chain
    never drain the sudo account that every run needs.
    """
    key = sudo or dev_keypair(SUDO_URI)
    await _retry_nonce(lambda: chain.submit(
        key, "Balances", "force_set_balance", {"who": ss58, "new_free": tao_to_rao(tao)}, sudo=True
    ))


async def burned_register(chain: SubstrateChainClient, coldkey: Keypair, netuid: int, hotkey_ss58: str) -> int:
    """Register ``hotkey_ss58`` on ``netuid`` by burning (paid by ``coldkey``); returns its uid."""
    await _retry_nonce(lambda: chain.submit(
        coldkey, MODULE, "burned_register", {"netuid": netuid, "hotkey": hotkey_ss58}
    ))
    uid = await chain.query(MODULE, "Uids", [netuid, hotkey_ss58])
    if uid is None:
        raise ChainError(f"{hotkey_ss58} is not registered on netuid {netuid} after burned_register")
    return int(uid)


async def add_stake(
    chain: SubstrateChainClient, coldkey: Keypair, hotkey_ss58: str, netuid: int, tao: float
) -> ExtrinsicReceipt:
    """Stake ``tao`` from ``coldkey`` on ``hotkey_ss58`` in ``netuid``."""
    return await _retry_nonce(lambda: chain.submit(
        coldkey, MODULE, "add_stake",
        {"hotkey": hotkey_ss58, "netuid": netuid, "amount_staked": tao_to_rao(tao)},
    ))


async def register_network(chain: SubstrateChainClient, owner: Keypair, hotkey_ss58: str | None = None) -> int:
    """Register a new subnet owned by ``owner`` (coldkey); returns its netuid (from the chain's event)."""
    _, events = await _retry_nonce(lambda: chain.submit_with_events(
        owner, MODULE, "register_network", {"hotkey": hotkey_ss58 or owner.ss58_address}
    ))
    for event in events:
        if (event["module_id"], event["event_id"]) == ("SubtensorModule", "NetworkAdded"):
            attributes = event["attributes"]
            if isinstance(attributes, Mapping):
                return int(attributes.get("netuid", attributes.get("0", -1)))
            return int(attributes[0])
    raise ChainError("register_network succeeded without a NetworkAdded event")


async def start_call(chain: SubstrateChainClient, owner: Keypair, netuid: int) -> None:
    """Enable emissions on a new subnet, building the blocks the runtime asks to wait first."""
    caps = await chain.capabilities()
    if not caps.has_call(MODULE, "start_call"):
        return
    registered_at = int(await chain.query(MODULE, "NetworkRegisteredAt", [netuid]) or 0)
    delay = await chain.constant(MODULE, "DurationOfStartCall")
    head = await chain.block()
    wait = registered_at + int(delay if delay is not None else 10) - head
    await advance_blocks(chain, max(wait + 1, 0))
    await _retry_nonce(lambda: chain.submit(owner, MODULE, "start_call", {"netuid": netuid}))


async def prepare_subnet(
    chain: SubstrateChainClient | str,
    *,
    owner: Keypair,
    validators: Sequence[tuple[Keypair, float]] = (),
    miners: Sequence[Keypair] = (),
    hyper: SubnetHyper | None = None,
    sudo: Keypair | None = None,
    owner_funds_tao: float = 50_000.0,
    permits: bool = True,
    emissions: bool | None = None,
) -> int:
    """Register a subnet ready for tests; returns its netuid.

    ``owner`` is the subnet owner's coldkey, and pays every registration and stake (its balance is set to
    ``owner_funds_tao`` by sudo first when lower). ``validators`` are (hotkey, stake in TAO) and are
    staked; ``miners`` are registered only. ``emissions`` runs ``start_call`` (needed for staking; default:
    when there are validators). With ``permits``, blocks are built until the validators hold their
    validator permits (one epoch after staking).

    Blocks are the slow part of a dev chain, so calls of one signer share an extrinsic
    (``Utility.batch_all``) and the registrations count toward the blocks ``start_call`` waits for.
    """
    if isinstance(chain, str):
        async with SubstrateChainClient(chain) as client:
            return await prepare_subnet(client, owner=owner, validators=validators, miners=miners, hyper=hyper,
                                        sudo=sudo, owner_funds_tao=owner_funds_tao, permits=permits,
                                        emissions=emissions)
    sudo_key = sudo or dev_keypair(SUDO_URI)
    settings = hyper or SubnetHyper()
    await _global_dev_settings(chain, sudo_key)
    if owner.ss58_address != sudo_key.ss58_address and await balance_tao(chain, owner.ss58_address) < owner_funds_tao:
        await set_balance(chain, owner.ss58_address, owner_funds_tao, sudo=sudo_key)
    netuid = await register_network(chain, owner)
    await sudo_calls(chain, settings.calls(netuid), sudo=sudo_key)
    hotkeys = [kp.ss58_address for kp, _ in validators] + [kp.ss58_address for kp in miners]
    if hotkeys:
        await _retry_nonce(lambda: chain.submit_batch(owner, [
            (MODULE, "burned_register", {"netuid": netuid, "hotkey": hotkey}) for hotkey in hotkeys
        ]))
    if emissions if emissions is not None else bool(validators):
        await start_call(chain, owner, netuid)
    staked = [(kp.ss58_address, stake) for kp, stake in validators if stake > 0]
    if staked:
        await _retry_nonce(lambda: chain.submit_batch(owner, [
            (MODULE, "add_stake", {"hotkey": hotkey, "netuid": netuid, "amount_staked": tao_to_rao(stake)})
            for hotkey, stake in staked
        ]))
    if permits and validators:
        await wait_for_permits(chain, netuid, [kp.ss58_address for kp, _ in validators])
    return netuid


async def _global_dev_settings(chain: SubstrateChainClient, sudo_key: Keypair) -> None:
    """Cheap, repeatable registrations (applied once per chain: a sudo extrinsic costs a block)."""
    wanted = {"NetworkRateLimit": 0, "NetworkLockReductionInterval": 1, "StakeThreshold": 0}
    current = {name: await chain.query(MODULE, name, []) for name in wanted}
    if current == wanted:
        return
    await sudo_calls(chain, [
        ("sudo_set_network_rate_limit", {"rate_limit": 0}),
        ("sudo_set_lock_reduction_interval", {"interval": 1}),
        ("sudo_set_stake_threshold", {"min_stake": 0}),
    ], sudo=sudo_key)


async def wait_for_permits(chain: SubstrateChainClient, netuid: int, hotkeys: Sequence[str],
                           max_epochs: int = 3) -> None:
    """Build blocks up to each next epoch until every hotkey holds a validator permit."""
    tempo = int(await chain.query(MODULE, "Tempo", [netuid]) or 10)
    for _ in range(max_epochs + 1):
        permits = await chain.query(MODULE, "ValidatorPermit", [netuid]) or []
        uids = [await chain.query(MODULE, "Uids", [netuid, h]) for h in hotkeys]
        if all(uid is not None and uid < len(permits) and permits[uid] for uid in uids):
            return
        head = await chain.block()
        # The runtime runs a subnet's epoch in the block where (block + netuid + 1) % (tempo + 1) == tempo.
        await advance_blocks(chain, (tempo - (head + netuid + 1)) % (tempo + 1) or tempo + 1)
    raise ChainError(f"no validator permit after {max_epochs} epochs on netuid {netuid}")
