"""Bad input to the command line: one line on stderr naming the flag, file, variable or key, exit code 2,
never a traceback; and nothing a user typed is ignored (a misspelt key), obeyed as a path (``../``) or
rendered as terminal markup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from inference_subnet.chain.wallet import create_wallet
from inference_subnet.cli.config import render_docs
from inference_subnet.cli.main import app
from inference_subnet.protocol.task import UnknownTask, load_task
from inference_subnet.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ISN_/REDIS_URL/DATABASE_URL from the surrounding shell; HOME and the working folder in tmp."""
    for name in list(os.environ):
        if name.upper().startswith("ISN_") or name in ("REDIS_URL", "DATABASE_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables: room for whole names
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(result: Result, *needles: str) -> str:
    """The single error line of a refused command, after checking code 2, no traceback, and the needles."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.fixture
def wallets(tmp_path: Path) -> Path:
    root = tmp_path / "wallets"
    create_wallet(root, "v", "h")
    return root


# -- settings: every key is checked -------------------------------------------------------------------


def test_misspelt_key_in_the_config_file_stops_the_miner(tmp_path: Path, wallets: Path) -> None:
    config = write(tmp_path / "config.toml", "[miner]\nmin_validator_stak = 1000\n")
    line = one_line_error(
        run("--config", str(config), "miner", "--wallet-path", str(wallets), "--wallet-name", "v",
            "--wallet-hotkey", "h"),
        "config.toml", "unknown key miner.min_validator_stak", "(did you mean miner.min_validator_stake?)",
    )
    assert line.startswith("error: ") and "Traceback" not in line
    with pytest.raises(SettingsError, match=r"config.toml: unknown key miner.min_validator_stak"):
        load_settings(config)


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("[validator.quotas]\nmin_shar = 0.1\n", "validator.quotas.min_shar", "validator.quotas.min_share"),
        ("[minr]\nport = 1\n", "minr", "miner"),
        ("subnet_nam = 'x'\n", "subnet_nam", "subnet_name"),
        ("[gateway]\nrate_brust = 3\n", "gateway.rate_brust", "gateway.rate_burst"),
    ],
)
def test_unknown_keys_at_every_depth(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    config = write(tmp_path / "config.toml", text)
    one_line_error(run("--config", str(config), "config", "show"), f"unknown key {key}", f"did you mean {suggestion}?")


def test_task_names_under_capacity_are_data_not_keys(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", "[miner.capacity]\nany_task_name = 5\n")
    assert load_settings(config).miner.capacity == {"any_task_name": 5}


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("ISN_MINER__PROT", "ISN_MINER__PORT"), ("ISN_MINER_PORT", "ISN_MINER__PORT"), ("ISN_FOO", None),
     ("ISN_VALIDATOR__QUOTAS__MIN_SHAR", "ISN_VALIDATOR__QUOTAS__MIN_SHARE"), ("ISN_MINER__PORT__X", None)],
)
def test_unknown_environment_variables(monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str | None) -> None:
    monkeypatch.setenv(name, "1")
    line = one_line_error(run("config", "show"), f"unknown environment variable {name}")
    if suggestion:
        assert f"(did you mean {suggestion}?)" in line
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_variables_that_are_not_settings_are_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ISN_CONFIG", str(write(tmp_path / "c.toml", "[miner]\nport = 9009\n")))
    monkeypatch.setenv("ISN_TEST_ANYTHING", "1")
    monkeypatch.setenv("ISN_MINER_SPEC", "{}")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("ISN_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("ISN_MINER__CAPACITY__ARITHMETIC", "7")
    s = load_settings()
    assert (s.miner.port, s.redis_url, s.database_url) == (9009, "redis://127.0.0.1:6379/0", "sqlite+aiosqlite:///x.db")
    assert s.miner.capacity == {"arithmetic": 7}
    assert run("config", "show").exit_code == 0


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path / "broken.toml", "[miner]\nport = 1\n[miner\n")
    one_line_error(run("--config", str(config), "config", "show"), "broken.toml", "not valid TOML", "line 3")


def test_non_utf8_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "latin1.toml", b"[miner]\nhost = \"caf\xe9\"\n")
    one_line_error(run("--config", str(config), "config", "show"), "latin1.toml", "not UTF-8", "line 2")


def test_config_file_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "folder.toml").mkdir()
    one_line_error(run("--config", str(tmp_path / "folder.toml"), "config", "show"), "--config", "folder.toml")


@pytest.mark.parametrize(
    ("name", "value"), [("ISN_MINER__CAPACITY", "notjson"), ("ISN_MINER__TASKS", "arithmetic"), ("ISN_MINER", "{")]
)
def test_json_variables_that_are_not_json(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    one_line_error(run("config", "show"), name, "not valid JSON")


def test_bad_values_name_their_variable_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ISN_MINER__PORT", "99999")
    one_line_error(run("config", "show"), "ISN_MINER__PORT", "miner.port", "65535")
    monkeypatch.delenv("ISN_MINER__PORT")
    monkeypatch.setenv("ISN_MINER", '{"prot": 1}')
    one_line_error(run("config", "show"), "ISN_MINER", "unknown key miner.prot", "did you mean miner.port?")
    monkeypatch.delenv("ISN_MINER")
    config = write(tmp_path / "config.toml", "[gateway]\nport = 0\n")
    one_line_error(run("--config", str(config), "config", "show"), "config.toml", "gateway.port")


@pytest.mark.parametrize("source", ["toml", "env", "env-entry"])
def test_negative_capacity_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> None:
    """Capacities are >= 0 (0: the miner accepts no request of that task); -5 is a settings error."""
    args = ["config", "show"]
    if source == "toml":
        args = ["--config", str(write(tmp_path / "config.toml", "[miner.capacity]\narithmetic = -5\n")), *args]
    elif source == "env":
        monkeypatch.setenv("ISN_MINER__CAPACITY", '{"arithmetic": -5}')
    else:
        monkeypatch.setenv("ISN_MINER__CAPACITY__ARITHMETIC", "-5")
    one_line_error(run(*args), "miner.capacity.arithmetic", "greater than or equal to 0")
    monkeypatch.delenv("ISN_MINER__CAPACITY", raising=False)
    monkeypatch.delenv("ISN_MINER__CAPACITY__ARITHMETIC", raising=False)
    assert load_settings(miner={"capacity": {"arithmetic": 0}}).miner.capacity == {"arithmetic": 0}


@pytest.mark.parametrize("url", ["garbage", "http://127.0.0.1:6379", "redis://", "127.0.0.1:6379"])
def test_redis_url_garbage(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    one_line_error(run("config", "show"), "REDIS_URL", "redis://")
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("ISN_REDIS_URL", url)
    one_line_error(run("config", "show"), "ISN_REDIS_URL")


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://u:p@h:6380", "unix:///tmp/valkey.sock",
     "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "rediss+cluster://h:7000", "REDIS://h:1"],
)
def test_redis_urls_that_connect_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    assert load_settings().redis_url == url


def test_blank_redis_url_means_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert load_settings().redis_url is None


def test_configuration_docs_are_generated_from_the_settings() -> None:
    """docs/configuration.md is `inference-subnet config docs`: regenerate it after changing settings.py."""
    assert (REPO / "docs" / "configuration.md").read_text() == render_docs()
    assert run("config", "docs").stdout == render_docs()


# -- tasks ------------------------------------------------------------------------------------------


def test_task_paths_say_what_is_wrong() -> None:
    with pytest.raises(UnknownTask, match=r"^os:system is not a Task$"):
        load_task("os:system")
    with pytest.raises(UnknownTask, match=r"cannot import module no_such_mod_x: No module named 'no_such_mod_x'"):
        load_task("no_such_mod_x:Task")
    with pytest.raises(UnknownTask, match=r"module inference_subnet.tasks.arithmetic has no attribute 'Nope'"):
        load_task("inference_subnet.tasks.arithmetic:Nope")
    with pytest.raises(UnknownTask, match="cannot create the task"):
        load_task("inference_subnet.protocol.task:Task")  # abstract
    with pytest.raises(UnknownTask, match="unknown task 'nope'; installed tasks: .*arithmetic"):
        load_task("nope")
    assert load_task("inference_subnet.tasks.arithmetic:ArithmeticTask").name == "arithmetic"


@pytest.mark.parametrize(
    ("task", "needle"),
    [("os:system", "os:system is not a Task"),
     ("no_such_mod_x.sub:T", "cannot import module no_such_mod_x.sub: No module named 'no_such_mod_x'")],
)
def test_miner_task_flag(wallets: Path, task: str, needle: str) -> None:
    one_line_error(
        run("miner", "--task", task, "--wallet-path", str(wallets), "--wallet-name", "v", "--wallet-hotkey", "h"),
        "--task", needle,
    )


# -- gateway keys ---------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"


@pytest.mark.parametrize(
    ("args", "named"),
    [(["create", "--name", "a", "--max-concurrent", "1e20"], "--max-concurrent"),
     (["create", "--name", "a", "--max-concurrent", str(10**20)], "--max-concurrent"),
     (["create", "--name", "a", "--rate-per-minute", str(2**31)], "--rate-per-minute"),
     (["create", "--name", "a", "--max-concurrent", "0"], "--max-concurrent"),
     (["revoke", "1e30"], "key_id"), (["revoke", str(10**30)], "key_id"), (["revoke", "0"], "key_id"),
     (["usage", "--key", "0"], "--key"), (["usage", "--key", str(10**30)], "--key")],
)
def test_key_numbers_out_of_range_are_usage_errors(db: str, args: list[str], named: str) -> None:
    """Click refuses them (before the database sees a number it cannot store: an OverflowError before)."""
    result = run("gateway", "keys", *args, "--database-url", db)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert named in result.output


@pytest.mark.parametrize("period", ["yesterday", "0h", "1.5h", "-2d", "99999w", "24"])
def test_usage_periods_that_are_not_periods_are_one_line_errors(db: str, period: str) -> None:
    one_line_error(run("gateway", "keys", "usage", "--period", period, "--database-url", db), "--period", period)


def test_largest_limits_are_stored(db: str) -> None:
    result = run("gateway", "keys", "create", "--name", "big", "--max-concurrent", str(2**31 - 1),
                 "--rate-per-minute", str(2**31 - 1), "--database-url", db)
    assert result.exit_code == 0, result.output
    assert f"{2**31 - 1}/min" in result.stderr


def test_key_names_are_shown_literally(db: str) -> None:
    assert run("gateway", "keys", "create", "--name", "[red]x[/red]", "--database-url", db).exit_code == 0
    assert run("gateway", "keys", "create", "--name", "[bold]y", "--database-url", db).exit_code == 0

    from inference_subnet.store.sql import ApiKey, Database, utcnow

    async def sneak() -> None:  # a row written by something else (an old version, SQL by hand): an escape
        database = Database(db)
        try:
            async with database.sessions.begin() as session:
                session.add(ApiKey(name="evil\x1b[2Jname", prefix="isn_sneak", secret_hash="0" * 64,
                                   rate_per_minute=1, max_concurrent=1, created_at=utcnow()))
        finally:
            await database.aclose()

    asyncio.run(sneak())
    listing = run("gateway", "keys", "list", "--database-url", db)
    assert listing.exit_code == 0, listing.output
    assert "[red]x[/red]" in listing.stdout and "[bold]y" in listing.stdout
    assert "\x1b" not in listing.stdout and "evil\\x1b[2Jname" in listing.stdout
    revoked = run("gateway", "keys", "revoke", "3", "--database-url", db)
    assert revoked.exit_code == 0 and "\x1b" not in revoked.stdout and "evil\\x1b" in revoked.stdout


@pytest.mark.parametrize("name", ["bad\x1b[31mred", "line\nbreak", "bidi\u202eevil"])
def test_key_names_with_control_characters_are_refused(db: str, name: str) -> None:
    result = run("gateway", "keys", "create", "--name", name, "--database-url", db)
    line = one_line_error(result, "--name", "control characters")
    assert "\x1b" not in result.output and "\u202e" not in line


def test_gateway_refuses_an_invalid_metagraph_file(tmp_path: Path, wallets: Path, db: str) -> None:
    bad = write(tmp_path / "bad.json", '{"not": "a metagraph"}')
    wallet = ["--wallet-path", str(wallets), "--wallet-name", "v", "--wallet-hotkey", "h"]
    one_line_error(run("gateway", "run", "--metagraph-file", str(bad), *wallet, "--database-url", db),
                   "--metagraph-file", "bad.json")
    one_line_error(run("gateway", "run", "--metagraph-file", str(tmp_path / "missing.json"), *wallet,
                       "--database-url", db), "missing.json", "not found")
    config = write(tmp_path / "config.toml", f'[chain]\nmetagraph_file = "{bad}"\n')
    one_line_error(run("--config", str(config), "gateway", "run", *wallet, "--database-url", db),
                   "chain.metagraph_file", "bad.json")


# -- wallets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--name", "../escape"), ("--name", "a/b"), ("--name", ".."), ("--name", ""), ("--hotkey", "../../x"),
     ("--hotkey", "h\x1b[2J"), ("--name", "[bold]x/y")],
)
def test_wallet_names_are_plain_names(tmp_path: Path, flag: str, value: str) -> None:
    root = tmp_path / "sandbox" / "wallets"
    root.mkdir(parents=True)
    result = run("wallet", "create", "--path", str(root), flag, value)
    line = one_line_error(result, {"--name": "--wallet.name", "--hotkey": "--wallet.hotkey"}[flag])
    assert "\x1b" not in result.output
    if value.startswith("[bold]"):
        assert "[bold]x/y" in line  # printed literally, not as markup
    assert [p for p in (tmp_path / "sandbox").rglob("*")] == [root]  # nothing written, inside or out


def test_unreadable_wallet_file(monkeypatch: pytest.MonkeyPatch, wallets: Path) -> None:
    pub = wallets / "v" / "coldkeypub.txt"
    real_read_text = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self == pub:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", denied)
    one_line_error(run("wallet", "show", "--path", str(wallets), "--name", "v", "--hotkey", "h"),
                   str(pub), "permission denied")


def test_wallet_file_that_is_not_text(wallets: Path) -> None:
    pub = wallets / "v" / "coldkeypub.txt"
    pub.write_bytes(b"\xff\xfe garbage")
    one_line_error(run("wallet", "show", "--path", str(wallets), "--name", "v", "--hotkey", "h"),
                   str(pub), "not UTF-8")


# -- the guard around every command ------------------------------------------------------------------


def test_guard_turns_a_missing_user_file_into_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "folder" / "configuration.md"
    one_line_error(run("config", "docs", "--out", str(target)), str(target), "No such file or directory")


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such.md"
    result = run("--debug", "config", "docs", "--out", str(target))
    assert isinstance(result.exception, FileNotFoundError)
    config = write(tmp_path / "config.toml", "[miner]\nprot = 1\n")
    result = run("--debug", "--config", str(config), "config", "show")
    assert isinstance(result.exception, SettingsError)


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.upper().startswith("ISN_") and k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "inference_subnet.cli.main", *args], env={**clean, "HOME": str(tmp_path), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def test_installed_command_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """The real entry point, as an operator runs it: no traceback, one line, code 2; --debug shows it."""
    config = write(tmp_path / "config.toml", "[miner]\nmin_validator_stak = 1000\n")
    done = _cli(["--config", str(config), "config", "show"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {config}: unknown key miner.min_validator_stak (did you mean miner.min_validator_stake?)"
    ]
    done = _cli(["config", "show"], tmp_path, ISN_MINER__PROT="1")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: unknown environment variable ISN_MINER__PROT (did you mean ISN_MINER__PORT?)"
    ]
    missing = tmp_path / "nope" / "x.md"
    done = _cli(["config", "docs", "--out", str(missing)], tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {missing}: No such file or directory"
    ]
    done = _cli(["--debug", "config", "docs", "--out", str(tmp_path / "nope" / "x.md")], tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr and "FileNotFoundError" in done.stderr
