"""The chain of a local subnet: a real subtensor node (any URL) or the in-memory chain.

Both sides do the same four things: register a subnet with one validator and N miners, serve the miners'
axons, build blocks (a dev node builds them only when asked, so the local subnet is its block clock), and
read back the weights the validator set, from chain storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bittensor_wallet import Keypair

from inference_subnet.chain.types import ChainClient, Metagraph

AXON_IP = "1.2.3.4"
"""What miners announce on chain: subtensor refuses loopback and private addresses, so a local subnet
serves a public-looking IP and the validator maps every axon to 127.0.0.1 (``chain.ip_override``)."""

SETTLE_SECONDS = 15.0
"""How long the final read waits for the node's pool to empty."""


@dataclass(frozen=True)
class Neurons:
    """Who the local subnet registered."""

    owner: Keypair
    validator: Keypair
    miners: tuple[Keypair, ...]
    validator_stake: float = 1000.0


class LocalChain(Protocol):
    """A chain a local subnet can drive."""

    kind: str
    url: str | None
    client: ChainClient

    async def setup(self, neurons: Neurons, ports: Sequence[int]) -> int:
        """Register the subnet and its neurons, serve the miners' axons; returns the netuid."""
        ...

    async def tick(self, blocks: int = 1) -> int:
        """Build blocks now; returns the new head."""
        ...

    async def settle(self) -> int:
        """Once the validator stopped: let whatever it sent land, build one more block; returns the head.

        What stays on chain is then what the report reads, not what an extrinsic still on its way changes.
        """
        ...

    async def weights_of(self, netuid: int, setter_uid: int) -> dict[int, float]:
        """The setter's weights as stored on chain, as shares summing to 1 (empty when none)."""
        ...

    async def metagraph(self, netuid: int) -> Metagraph:
        """The subnet as the local subnet itself sees it (not through the validator's connection)."""
        ...

    async def close(self) -> None: ...


class MemoryChain:
    """The in-memory chain: no node needed, same weight rules; said plainly in every report."""

    kind = "memory"
    url = None

    def __init__(self, *, tempo: int = 10) -> None:
        from inference_subnet.chain.memory import MemoryChainClient

        self.client = MemoryChainClient()
        self._tempo = tempo

    async def setup(self, neurons: Neurons, ports: Sequence[int]) -> int:
        hyper = self.client.create_subnet(tempo=self._tempo, weights_rate_limit=0)
        netuid = hyper.netuid
        self.client.register(netuid, neurons.validator, neurons.owner, stake=neurons.validator_stake,
                              validator_permit=True)
        for miner, port in zip(neurons.miners, ports, strict=True):
            self.client.register(netuid, miner, neurons.owner)
            await self.client.serve_axon(miner, netuid, AXON_IP, port)
        return netuid

    async def tick(self, blocks: int = 1) -> int:
        return self.client.advance(blocks)

    async def settle(self) -> int:
        return await self.tick()

    async def weights_of(self, netuid: int, setter_uid: int) -> dict[int, float]:
        return self.client.weights(netuid).get(setter_uid, {})

    async def metagraph(self, netuid: int) -> Metagraph:
        return await self.client.metagraph(netuid)

    async def close(self) -> None:
        await self.client.close()


class SubstrateChain:
    """A real subtensor node whose sudo key is ``//Alice`` (a dev chain: the local runtime, or any localnet)."""

    kind = "real"

    def __init__(self, url: str, *, tempo: int = 10) -> None:
        from inference_subnet.chain.substrate import SubstrateChainClient

        self.url = url
        self.client = SubstrateChainClient(url, call_timeout=30.0)
        """The validator's connection."""
        self._own = SubstrateChainClient(url, call_timeout=30.0)
        """Set-up, the block clock and the view: never queued behind the validator's calls."""
        self._tempo = tempo

    async def setup(self, neurons: Neurons, ports: Sequence[int]) -> int:
        from inference_subnet.chain.localchain import SubnetHyper, dev_keypair, fund, prepare_subnet

        netuid = await prepare_subnet(
            self._own, owner=neurons.owner, validators=[(neurons.validator, neurons.validator_stake)],
            miners=neurons.miners, hyper=SubnetHyper(tempo=self._tempo, weights_rate_limit=0, commit_reveal=False),
        )
        sudo = dev_keypair("//Alice")
        # Miners pay the serve_axon fee from their own (hot)key: give each a little.
        for miner in neurons.miners:
            await fund(self._own, sudo, miner.ss58_address, 10.0)
        await asyncio.gather(*(
            self._own.serve_axon(miner, netuid, AXON_IP, port)
            for miner, port in zip(neurons.miners, ports, strict=True)
        ))
        return netuid

    async def tick(self, blocks: int = 1) -> int:
        from inference_subnet.chain.localchain import advance_blocks

        return await advance_blocks(self._own, blocks)

    async def settle(self) -> int:
        # A cancelled call can leave an extrinsic in the connection's send queue, sent later: closing the
        # validator's connection ends that (it reconnects on its next call). The node builds a block for
        # each extrinsic that arrives, so an empty pool means every one has landed.
        await self.client.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while await self._own.rpc("author_pendingExtrinsics", []) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        return await self.tick()

    async def weights_of(self, netuid: int, setter_uid: int) -> dict[int, float]:
        from inference_subnet.chain.substrate import MODULE

        row = await self._own.query(MODULE, "Weights", [netuid, setter_uid]) or []
        pairs = [(int(uid), int(value)) for uid, value in row]
        total = sum(value for _, value in pairs)
        return {uid: value / total for uid, value in pairs} if total else {}

    async def metagraph(self, netuid: int) -> Metagraph:
        return await self._own.metagraph(netuid)

    async def close(self) -> None:
        await self._own.close()
        await self.client.close()
