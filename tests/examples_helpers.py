"""What the example tasks' tests share: a real miner app serving one example behind signed requests, and
the checks every challenge-based example (ocr, detect, vision) makes of its scoring and of what its
requests let a miner see."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from bittensor_wallet import Keypair
from PIL import Image
from pydantic import BaseModel, ValidationError

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol import btauth
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import Handler, Task
from inference_subnet.settings import load_settings
from inference_subnet.protocol.behaviours import GARBAGE
from inference_subnet.protocol.challenge import ChallengeKey, ChallengeTask

# -- a miner app serving one example ------------------------------------------------------------------------


@dataclass
class SignedMiner:
    """A client of a miner app that signs what it posts as the one validator of the metagraph."""

    client: httpx.AsyncClient
    task: Task
    miner: Keypair
    validator: Keypair

    async def post(self, body: bytes) -> httpx.Response:
        """``body`` to the task's route, signed for this miner."""
        headers = btauth.sign(
            self.validator, method="POST", path=self.task.route, body=body, receiver_ss58=self.miner.ss58_address
        )
        return await self.client.post(
            self.task.route, content=body, headers={**headers, "content-type": "application/json"}
        )


@asynccontextmanager
async def serve_miner(task: Task, redis: Any, keys: Any, *, netuid: int) -> AsyncIterator[SignedMiner]:
    """The real miner app serving ``task`` with its reference handler, over an in-process transport: the
    miner's auth, validation and streaming are the production ones."""
    prefix = task.name.capitalize()
    miner, validator = Keypair.create_from_uri(f"//{prefix}Miner"), Keypair.create_from_uri(f"//{prefix}Validator")
    graph = Metagraph(netuid=netuid, block=10, neurons=(
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey=validator.ss58_address, stake=1000.0,
               validator_permit=True, registration_block=1),
        Neuron(uid=1, hotkey=miner.ss58_address, coldkey=miner.ss58_address, stake=0.0,
               validator_permit=False, registration_block=2),
    ))
    settings = load_settings(None, chain={"netuid": netuid})
    app = create_miner_app([task], {task.name: load_handler(task, {})}, settings, keypair=miner,
                           metagraph=StaticMetagraphSource(graph), redis=redis, keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner") as client:
        yield SignedMiner(client, task, miner, validator)


# -- challenge-based examples -------------------------------------------------------------------------------


def synthetic(task: Task, count: int, seed: int) -> list[Any]:
    """``count`` synthetic requests, the same for the same seed."""
    rng = random.Random(seed)
    return [task.synthesize(rng) for _ in range(count)]


async def answer_all(handler: Handler, requests: Sequence[Any]) -> list[Any]:
    return [await handler(r) for r in requests]  # type: ignore[misc]


def mean_score(task: Task, requests: Sequence[Any], responses: Sequence[Any]) -> float:
    """The mean of each answer's score against its own request. Every answer took a tenth of a second:
    the challenge examples' scores do not weigh speed."""
    scores = [task.score(q, [a], [0.1])[0] for q, a in zip(requests, responses)]
    return sum(scores) / len(scores)


def guessed_truth(task: ChallengeTask, request: Any) -> random.Random:
    """The best a miner that knows the task's code but not the secret can do: the request's own nonce
    under a key of its guessing."""
    return ChallengeKey(b"a-guess-at-the-validator-key")._truth(task.name, request.id[:16])


def another_key_opens(task: ChallengeTask, request: Any) -> bool:
    """Whether a key other than the task's recovers anything from the request's id."""
    return ChallengeKey(b"someone-else-entirely-0000").open(task.name, request.id) is not None


def png_text_chunks(image_b64: str) -> list[str]:
    """The text metadata of a base64 PNG: where the truth must not hide."""
    image = Image.open(io.BytesIO(base64.b64decode(image_b64)))
    return [v for v in image.info.values() if isinstance(v, str)]


async def check_garbage_miner(task: Task, request: BaseModel) -> None:
    """The ``garbage`` miner answers something the task's Response refuses."""
    answer = await load_handler(task, {"behaviour": "garbage"})(request)  # type: ignore[misc]
    assert answer == GARBAGE
    with pytest.raises(ValidationError):
        task.Response.model_validate(answer)
