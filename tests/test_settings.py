"""Settings precedence: defaults < TOML file < environment < explicit overrides (CLI flags)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inference_subnet.cli.main import app
from inference_subnet.settings import CONFIG_ENV_VAR, ConfigFileError, Settings, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ISN_/REDIS_URL variables from the surrounding shell may leak into a precedence test."""
    import os

    for name in list(os.environ):
        if name.startswith("ISN_") or name in ("REDIS_URL", "DATABASE_URL"):
            monkeypatch.delenv(name)
    return monkeypatch


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


CONFIG = """
subnet_name = "fromfile"
[miner]
port = 9001
max_body_bytes = 2000
[validator.quotas]
min_share = 0.02
"""


def test_defaults(clean_env) -> None:
    s = load_settings(None)
    assert s.miner.port == 8091 and s.subnet_name == "isn" and s.redis_url is None
    assert s.validator.quotas.min_share == 0.0 and s.validator.quotas.min_requests == 5


def test_precedence_layer_by_layer(clean_env, tmp_path: Path) -> None:
    path = toml(tmp_path, CONFIG)
    s = load_settings(path)
    assert (s.miner.port, s.miner.max_body_bytes, s.subnet_name) == (9001, 2000, "fromfile")
    assert s.validator.quotas.min_share == 0.02
    assert s.miner.host == "0.0.0.0"  # untouched by the file: still the default

    clean_env.setenv("ISN_MINER__PORT", "9002")
    clean_env.setenv("ISN_VALIDATOR__QUOTAS__MIN_SHARE", "0.03")
    s = load_settings(path)
    assert s.miner.port == 9002 and s.validator.quotas.min_share == 0.03
    assert s.miner.max_body_bytes == 2000  # the file still wins over the default where env is silent

    s = load_settings(path, miner={"port": 9003, "host": None})
    assert s.miner.port == 9003
    assert s.miner.host == "0.0.0.0"  # a flag left unset (None) does not mask lower layers
    assert s.miner.max_body_bytes == 2000 and s.validator.quotas.min_share == 0.03


def test_config_file_from_environment(clean_env, tmp_path: Path) -> None:
    clean_env.setenv(CONFIG_ENV_VAR, str(toml(tmp_path, CONFIG)))
    assert load_settings(None).miner.port == 9001


def test_redis_url_aliases(clean_env) -> None:
    clean_env.setenv("REDIS_URL", "redis://plain:6379/0")
    assert load_settings(None).redis_url == "redis://plain:6379/0"
    clean_env.delenv("REDIS_URL")
    clean_env.setenv("ISN_REDIS_URL", "redis://prefixed:6379/0")
    assert load_settings(None).redis_url == "redis://prefixed:6379/0"


def test_bad_config_file_path(clean_env, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigFileError, match=f"config file not found: {missing}"):
        load_settings(missing)
    result = CliRunner().invoke(app, ["--config", str(missing), "config", "show"])
    assert result.exit_code == 2
    assert "--config" in result.output and "nope.toml" in result.output


def test_invalid_values_name_the_setting(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("ISN_MINER__PORT", "99999")
    with pytest.raises(Exception, match="port"):
        load_settings(None)
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "miner.port" in result.output


def test_unknown_top_level_keys_are_refused(clean_env, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no_such_setting"):
        load_settings(toml(tmp_path, "no_such_setting = 1\n"))


def test_one_model_covers_the_miner(clean_env) -> None:
    fields = Settings.model_fields["miner"].annotation.model_fields
    assert {"max_body_bytes", "require_validator_permit", "min_validator_stake", "auth_enabled",
            "max_request_age", "allowed_clock_skew", "enforce_quota", "capacity"} <= set(fields)
