"""Every process of one validator opens the challenge ids any of them issued: the secret is configured, or
drawn once and shared through Redis."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from pydantic import SecretStr

from inference_subnet.protocol.challenge import SECRET_ENV, configured_key, share_secret
from inference_subnet.settings import SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.delenv(SECRET_ENV, raising=False)
    configured_key.cache_clear()
    yield
    configured_key.cache_clear()


async def test_processes_agree_on_one_secret_through_redis(redis, keys, clean_env) -> None:  # noqa: ANN001
    settings = load_settings()
    await share_secret(redis, keys, settings)
    first = os.environ[SECRET_ENV]
    challenge, truth = configured_key().issue("ocr", random.Random(1))

    # A second process of the same validator: its own environment, the same Redis.
    os.environ.pop(SECRET_ENV)
    configured_key.cache_clear()
    await share_secret(redis, keys, settings)
    assert os.environ[SECRET_ENV] == first
    opened = configured_key().open("ocr", challenge)
    assert opened is not None and opened.random() == truth.random()

    # A child process (a scoring worker) inherits the secret and opens the same challenge.
    code = ("import sys; from inference_subnet.protocol.challenge import configured_key; "
            f"sys.exit(0 if configured_key().open('ocr', {challenge!r}) else 3)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


async def test_another_validator_cannot_open_the_challenges(redis, keys, clean_env) -> None:  # noqa: ANN001
    from inference_subnet.store.keys import Keys

    await share_secret(redis, keys, load_settings())
    challenge, _ = configured_key().issue("vision", random.Random(2))
    other = Keys(subnet=keys.subnet + "x", netuid=keys.netuid, role="validator")
    os.environ.pop(SECRET_ENV)
    configured_key.cache_clear()
    await share_secret(redis, other, load_settings())
    assert configured_key().open("vision", challenge) is None


async def test_a_configured_secret_wins_and_is_not_stored(redis, keys, clean_env) -> None:  # noqa: ANN001
    settings = load_settings()
    settings.validator.challenge_secret = SecretStr("s" * 32)
    await share_secret(redis, keys, settings)
    assert os.environ[SECRET_ENV] == "s" * 32
    assert await redis.get(keys.challenge_secret()) is None


def test_the_secret_is_a_validator_setting_and_the_old_key_names_the_new_one(
    clean_env, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    monkeypatch.setenv("ISN_VALIDATOR__CHALLENGE_SECRET", "v" * 32)
    assert SECRET_ENV == "ISN_VALIDATOR__CHALLENGE_SECRET"
    assert load_settings().validator.challenge_secret.get_secret_value() == "v" * 32
    assert configured_key().open("ocr", configured_key().issue("ocr", random.Random(2))[0]) is not None
    monkeypatch.delenv("ISN_VALIDATOR__CHALLENGE_SECRET")
    monkeypatch.setenv("ISN_EXAMPLES__CHALLENGE_SECRET", "v" * 32)
    moved = r"ISN_EXAMPLES__CHALLENGE_SECRET \(it moved: ISN_VALIDATOR__CHALLENGE_SECRET\)"
    with pytest.raises(SettingsError, match=moved):
        load_settings()
