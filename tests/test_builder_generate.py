"""``inference-subnet new``: the project a spec or an example becomes, checked file by file, its own tests
run (green), its deployment files validated like the framework's own, and the overwrite rules."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values
from pydantic import ValidationError
from test_deploy import check_command, interpolate, listening_port, settings_for, validate_compose
from typer.testing import CliRunner

import inference_subnet
from inference_subnet.builder.generate import MANIFEST
from inference_subnet.builder.testing import run_tests
from inference_subnet.cli.main import app
from inference_subnet.settings import load_settings
from inference_subnet.protocol.behaviours import GARBAGE

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "examples" / "specs"
FRAMEWORK = Path(inference_subnet.__file__).resolve().parent


def new(*args: str) -> Any:
    result = CliRunner().invoke(app, ["new", *args], env={"COLUMNS": "200"})
    return result


@pytest.fixture(scope="module")
def textops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "textops"
    result = new(str(SPECS / "textops.toml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def files_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_a_spec_becomes_a_complete_project(textops: Path) -> None:
    assert files_of(textops) == {
        MANIFEST, ".ci/run", ".gitignore", "Makefile", "README.md", "pyproject.toml",
        "config/validator.toml", "config/miner.toml",
        "deploy/docker/Dockerfile", "deploy/docker/docker-compose.yml", "deploy/docker/.env.example",
        "deploy/pm2/ecosystem.config.js",
        "textops/__init__.py", "textops/spec.toml", "textops/models.py", "textops/tasks.py",
        "textops/reference.py", "textops/handlers.py", "tests/test_tasks.py",
    }
    assert (textops / ".ci/run").stat().st_mode & stat.S_IXUSR
    assert (textops / "textops/spec.toml").read_text() == (SPECS / "textops.toml").read_text()
    pyproject = tomllib.loads((textops / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["inference_subnet.tasks"] == {
        "caesar": "textops.tasks:CaesarTask", "stats": "textops.tasks:StatsTask"}
    (dependency,) = pyproject["project"]["dependencies"]
    assert dependency.startswith("inference-subnet>=0.1,")
    readme = (textops / "README.md").read_text()
    assert "make localnet" in readme and "make test" in readme
    makefile = (textops / "Makefile").read_text()
    assert "TASKS := caesar stats" in makefile and "localnet $(foreach t,$(TASKS),--task $(t))" in makefile
    handlers = (textops / "textops/handlers.py").read_text()
    assert handlers.count("# OWNER: your miner's work for task") == 2


def test_setup_installs_into_an_existing_environment(textops: Path, tmp_path: Path) -> None:
    """`make setup VENV=... FRAMEWORK=` uses an environment as it is: no new venv, no pip upgrade, no framework
    fetched; only the project itself is installed. With FRAMEWORK set, that is what pip installs first."""
    existing = tmp_path / "env"
    (existing / "bin").mkdir(parents=True)
    (existing / "bin" / "python").write_text("#!/bin/sh\n")
    (existing / "bin" / "python").chmod(0o755)
    plan = subprocess.run(["make", "-n", "setup", f"VENV={existing}", "FRAMEWORK="], cwd=textops,
                          capture_output=True, text=True, check=True).stdout
    commands = [line for line in plan.splitlines() if "pip install" in line]
    assert commands == [f'{existing}/bin/pip install -q -e ".[test]"'], plan
    assert "--upgrade pip" not in plan
    wheel = tmp_path / "inference_subnet-0.1.0-py3-none-any.whl"
    plan = subprocess.run(["make", "-n", "setup", f"VENV={existing}", f"FRAMEWORK={wheel}"], cwd=textops,
                          capture_output=True, text=True, check=True).stdout
    assert [line for line in plan.splitlines() if "pip install" in line][0] == f"{existing}/bin/pip install -q {wheel}"


def test_a_garbage_chunk_is_not_an_empty_piece(textops: Path) -> None:
    """Every field of a generated chunk has a default (the last chunk carries what is not streamed), so only
    refusing unknown keys keeps a garbage object from passing as an empty piece of an answer."""
    spec = importlib.util.spec_from_file_location("textops_models", textops / "textops/models.py")
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    assert models.CaesarChunk.model_validate({"text": "wkh"}).text == "wkh"
    assert models.CaesarChunk.model_validate({}).text == ""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        models.CaesarChunk.model_validate(GARBAGE)


def test_the_project_uses_the_framework_and_copies_none_of_it(textops: Path) -> None:
    framework_names: set[str] = set()
    for path in FRAMEWORK.rglob("*.py"):
        tree = ast.parse(path.read_text())
        framework_names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    generated: set[str] = set()
    imports: set[str] = set()
    for path in (textops / "textops").glob("*.py"):
        tree = ast.parse(path.read_text())
        generated |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert generated & framework_names == set()
    assert {"inference_subnet.builder.runtime", "inference_subnet.builder.handlers"} <= imports
    lines = sum(len(p.read_text().splitlines()) for p in (textops / "textops").glob("*.py"))
    assert lines < 200, "the package holds only what is particular to the subnet"


def test_the_generated_tests_pass(textops: Path) -> None:
    run = run_tests(textops, timeout=240)
    assert run.ok, run.output
    assert run.summary.startswith("10 passed")


def test_a_spec_with_every_scorer_and_synthesizer_passes_its_tests(tmp_path: Path) -> None:
    out = tmp_path / "showcase"
    result = new(str(SPECS / "showcase.toml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "references come from the generator" in " ".join(result.output.split())
    assert (out / "showcase/data/echo.jsonl").read_text() == (SPECS / "data/echo.jsonl").read_text()
    assert "def score_shapes_1(" in (out / "showcase/scoring.py").read_text()
    validator = load_settings(out / "config/validator.toml").validator
    assert validator.tasks == ["echo", "sentiment", "shapes", "vectors"]
    assert (validator.round_interval_seconds, validator.scoring.quality_weight) == (1.0, 0.8)
    run = run_tests(out, timeout=240)
    assert run.ok, run.output
    assert run.summary.startswith("18 passed")


def test_a_broken_reference_makes_the_generated_tests_fail(tmp_path: Path) -> None:
    """The generated tests are not a formality: a solver whose answers break the response model fails them."""
    spec = tmp_path / "broken.toml"
    spec.write_text((SPECS / "textops.toml").read_text().replace(
        'return {"count": len(values)', 'return {"count": -len(values)'))
    out = tmp_path / "broken"
    assert new(str(spec), "--out", str(out)).exit_code == 0
    run = run_tests(out, timeout=240)
    assert not run.ok and "failed" in run.summary
    assert "test_baseline_miner_scores_high[stats]" in run.output


def test_a_task_without_a_baseline_gets_a_marked_stub_and_a_warning(tmp_path: Path) -> None:
    spec = tmp_path / "nobaseline.toml"
    text = (SPECS / "showcase.toml").read_text()
    start = text.index("[tasks.miner]")
    spec.write_text(text[:start] + text[text.index("[[tasks.score]]", start):])
    (tmp_path / "data").mkdir()
    (tmp_path / "data/echo.jsonl").write_text((SPECS / "data/echo.jsonl").read_text())
    result = new(str(spec), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert "task shapes: no baseline miner" in " ".join(result.output.split())
    handlers = (tmp_path / "out/showcase/handlers.py").read_text()
    assert 'raise NotImplementedError("write the shapes miner: answer_shapes in showcase/handlers.py")' in handlers


# --- overwriting --------------------------------------------------------------------------------------------

def test_an_existing_folder_is_never_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert new(str(SPECS / "textops.toml"), "--out", str(out)).exit_code == 0
    (out / "textops/handlers.py").write_text("# my miner\n")
    (out / "NOTES.md").write_text("mine\n")
    refused = new(str(SPECS / "textops.toml"), "--out", str(out))
    assert refused.exit_code == 2 and "pass --force" in refused.output
    assert (out / "textops/handlers.py").read_text() == "# my miner\n"

    # A forced run rewrites what it generates, drops what only an earlier generation wrote, keeps the rest.
    (out / "textops/old.py").write_text("stale\n")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps([*manifest, "textops/old.py", "../outside.txt"]))
    (tmp_path / "outside.txt").write_text("not ours\n")
    assert new(str(SPECS / "textops.toml"), "--out", str(out), "--force").exit_code == 0
    assert "OWNER" in (out / "textops/handlers.py").read_text()
    assert not (out / "textops/old.py").exists()
    assert (out / "NOTES.md").read_text() == "mine\n" and (tmp_path / "outside.txt").exists()

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert new(str(SPECS / "textops.toml"), "--out", str(a_file), "--force").exit_code == 2


# --- deployment and config files ----------------------------------------------------------------------------

def test_the_generated_compose_file_is_valid_and_runs_real_commands(textops: Path) -> None:
    docker = textops / "deploy/docker"
    env = {"HOME": "/home/op", **{k: v for k, v in dotenv_values(docker / ".env.example").items() if v is not None}}
    raw = (docker / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", raw)) - {"HOME"}
    assert used <= set(env), f"variables missing from .env.example: {used - set(env)}"
    model = interpolated(yaml.safe_load(raw), env)  # as Compose does: YAML first, then each string
    validate_compose(model)
    services = model["services"]
    assert {"sidecar", "synthesizing", "scoring", "orchestrator", "weights", "gateway", "miner"} <= set(services)
    for name, service in services.items():
        if "build" not in service:
            continue
        invocation = check_command(service["command"], f"generated compose {name}")
        cfg = settings_for(service["environment"], name)
        assert cfg.subnet_name == "textops"
        tasks = cfg.miner.tasks if name == "miner" else cfg.validator.tasks
        assert tasks == ["caesar", "stats"]
        health = " ".join(service["healthcheck"]["test"])
        assert f":{listening_port(invocation, cfg)}/health" in health


def test_the_generated_dockerfile_pm2_and_configs(textops: Path, tmp_path: Path) -> None:
    parser = DockerfileParser(str(textops / "deploy/docker/Dockerfile"))
    assert parser.baseimage == "python:3.11-slim"
    for step in (s for s in parser.structure if s["instruction"] == "COPY"):
        for source in step["value"].split()[:-1]:
            assert (textops / source).exists(), f"the Dockerfile copies missing {source}"
    users = [s["value"] for s in parser.structure if s["instruction"] == "USER"]
    assert users[-1] == "isn"

    out = subprocess.run(
        ["node", "-e", "process.stdout.write(JSON.stringify(require(process.argv[1])))",
         str(textops / "deploy/pm2/ecosystem.config.js")],
        env={"PATH": os.environ["PATH"], "NETWORK": "test", "NETUID": "7"}, capture_output=True, text=True,
        timeout=30, check=True,
    )
    apps = json.loads(out.stdout)["apps"]
    for entry in apps:
        check_command(entry["args"], f"pm2 {entry['name']}")
        cfg = settings_for(entry["env"], entry["name"])
        assert cfg.chain.netuid == 7 and cfg.subnet_name == "textops"
    assert sorted(a["name"] for a in apps) == ["textops-gateway", "textops-miner", "textops-validator"]

    validator = load_settings(textops / "config/validator.toml")
    assert validator.validator.tasks == ["caesar", "stats"]
    assert validator.validator.round_interval_seconds == 2.0 and validator.validator.organic_reuse_ratio == 0.2
    miner = load_settings(textops / "config/miner.toml")
    assert miner.miner.tasks == ["caesar", "stats"] and miner.subnet_name == "textops"


# --- from an example ---------------------------------------------------------------------------------------

def test_from_example_extends_the_example_task(tmp_path: Path) -> None:
    out = tmp_path / "arith"
    result = new("--from-example", "arithmetic", "--name", "sums", "--out", str(out))
    assert result.exit_code == 0, result.output
    tasks = (out / "sums/tasks.py").read_text()
    assert "from inference_subnet.tasks.arithmetic import ArithmeticTask as ExampleTask" in tasks
    assert 'name = "sums"' in tasks
    assert "# OWNER: your miner's work." in (out / "sums/handlers.py").read_text()
    run = run_tests(out, timeout=240)
    assert run.ok, run.output


def test_from_example_refuses_unknown_examples_and_taken_names(tmp_path: Path) -> None:
    unknown = new("--from-example", "chess", "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 2 and "no shipped example 'chess'" in unknown.output
    assert "arithmetic" in unknown.output
    taken = new("--from-example", "arithmetic", "--name", "arithmetic", "--out", str(tmp_path / "y"))
    assert taken.exit_code == 2 and "already installed" in taken.output
    listed = new("--list")
    assert listed.exit_code == 0 and "arithmetic" in listed.output.split()
