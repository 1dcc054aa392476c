"""Human-written text, read at run time from documentation already on the machine.

Two sources, neither copied into the repository: the docstrings of the Python standard library (read
from its source files with :mod:`ast`, never by importing the modules: some have side effects on import)
and the text files under ``examples.detect_corpus_dirs`` (``/usr/share/doc`` by default: READMEs, .txt,
.md, .rst). Both are cut into prose paragraphs; code, tables, lists and licence boilerplate are dropped.

Reading the standard library takes a few seconds, so the paragraphs are kept in the examples' cache
directory, under a name that changes with the sources read. Every process that reads the same sources gets
the same paragraphs in the same order.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

MIN_WORDS = 30
"""Shortest paragraph kept: samples are 30 to 80 words."""
MAX_FILE_BYTES = 256 * 1024
DOC_SUFFIXES = (".txt", ".md", ".rst")
_SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__phello__", "examples"}
_WORD = re.compile(r"^[(\"']?[A-Za-z][a-z]*(?:['-][a-z]+)*[)\"']?[.,;:!?]?[)\"']?$")
_BOILERPLATE = re.compile(
    r"(?i)\b(copyright|licen[cs]e|warranty|all rights reserved|redistribut|GNU|MERCHANTABILITY)\b"
)
_VERSION = "1"


class CorpusError(RuntimeError):
    """No human text could be read from the configured sources."""


def stdlib_docstrings() -> Iterator[str]:
    """Every module, class and function docstring of the standard library's pure-Python modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def doc_files(folders: Iterable[Path]) -> Iterator[str]:
    """The text of every README, .txt, .md and .rst file under ``folders`` (small files only)."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            name = path.name
            if not (name.endswith(DOC_SUFFIXES) or name.startswith("README")) or name.endswith(".gz"):
                continue
            try:
                if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                    continue
                yield path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue


def paragraphs(text: str) -> Iterator[str]:
    """The prose paragraphs of ``text``: blank-line separated, whitespace collapsed, at least
    :data:`MIN_WORDS` words, nearly all of them plain words (so code, tables and lists are dropped)."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        if not lines or any(
            line.lstrip().startswith((">>>", "...", "$ ", "#", "|", "+-", "..", "::")) for line in lines
        ):
            continue
        words = " ".join(lines).split()
        if len(words) < MIN_WORDS or _BOILERPLATE.search(block):
            continue
        if sum(1 for w in words if _WORD.match(w)) < 0.85 * len(words):
            continue
        if not words[0][0].isupper() or not words[-1].endswith((".", "!", "?")):
            continue
        yield " ".join(words)


def build_paragraphs(folders: Sequence[Path]) -> list[str]:
    """All human paragraphs from both sources, de-duplicated, in a stable order."""
    seen: set[str] = set()
    found = []
    for text in (*stdlib_docstrings(), *doc_files(folders)):
        for paragraph in paragraphs(text):
            if paragraph not in seen:
                seen.add(paragraph)
                found.append(paragraph)
    return found


def corpus_key(folders: Sequence[Path]) -> str:
    """A name for the cached corpus that changes with what is read: Python version and folders."""
    sources = json.dumps([_VERSION, sys.version, sysconfig.get_paths()["stdlib"], [str(f) for f in folders]])
    return "detect-corpus-" + hashlib.sha256(sources.encode()).hexdigest()[:16]


def load_paragraphs(folders: Sequence[Path], cache: Path) -> list[str]:
    """The human corpus: from ``cache`` when built there, else read now and kept there."""
    from inference_subnet.tasks.tiny import build_once

    def build(directory: Path) -> None:
        (directory / "paragraphs.json").write_text(json.dumps(build_paragraphs(folders)), encoding="utf-8")

    target = build_once(cache, corpus_key(folders), build)
    found = json.loads((target / "paragraphs.json").read_text(encoding="utf-8"))
    if not found:
        raise CorpusError(
            "no human-written paragraphs found in the standard library's docstrings or in "
            f"{', '.join(map(str, folders)) or 'no folder'} (examples.detect_corpus_dirs)"
        )
    return found
