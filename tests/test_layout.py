"""The folder layout tells the architecture: the import graph of ``inference_subnet``, read with ``ast``, has
no circles between modules and no package importing one on its own layer or above it. The layers are the
block under "## Layers" in docs/architecture.md, so the documentation and the code cannot drift apart."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "inference_subnet"
ROOT = "inference_subnet"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that can run: at module level and inside functions (a deferred import still ties two
    modules together), but not under ``if TYPE_CHECKING:``, which names a type and never runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                yield from _imports(child)
        else:
            yield from _imports(node)


def _known(name: str) -> str | None:
    """The innermost module of the package that ``name`` is or lies in (``None``: not ours)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def dependencies(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` depends on the submodule when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        found |= {t for t in map(_known, targets) if t is not None and t != module}
    return found


GRAPH = {module: dependencies(module) for module in MODULES}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def documented_layers() -> list[set[str]]:
    """The layers as docs/architecture.md draws them: top first, one line each, names split by ``·``."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"^## Layers\n.*?```\n(.*?)```", text, re.S | re.M)
    assert block, "docs/architecture.md has no ## Layers block"
    layers = []
    for line in block.group(1).strip().splitlines():
        layers.append({re.sub(r"\s*\(.*\)", "", name).strip() for name in line.split("·")})
    return layers[::-1]


def top_package(module: str) -> str:
    """``inference_subnet.validator.gateway.app`` -> ``validator``; the package's own ``__init__`` is
    ``inference_subnet``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_deferred_and_relative_imports() -> None:
    # cli/gateway.py imports the migrations inside a function; a layout check that missed it would pass
    # circles that exist at run time.
    assert "inference_subnet.store.migrations" in GRAPH["inference_subnet.cli.gateway"]
    assert "inference_subnet.protocol.task" in GRAPH["inference_subnet.protocol.handlers"]


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles(GRAPH) == []


def test_every_package_is_on_a_layer() -> None:
    placed = set().union(*documented_layers())
    assert {top_package(m) for m in MODULES} <= placed, "add the new package to docs/architecture.md's layers"
    assert placed <= {top_package(m) for m in MODULES}, "a layer names a package that does not exist"


def test_no_package_imports_its_own_layer_or_above() -> None:
    layer_of = {name: i for i, layer in enumerate(documented_layers()) for name in layer}
    upward = sorted(
        f"{module} imports {dependency} ({top_package(dependency)} is not below {top_package(module)})"
        for module, deps in GRAPH.items()
        for dependency in deps
        if top_package(module) != top_package(dependency)
        and layer_of[top_package(dependency)] >= layer_of[top_package(module)]
    )
    assert upward == []
