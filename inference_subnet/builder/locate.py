"""Where each key of a TOML document is: so a spec error names its line, which ``tomllib`` cannot tell.

A small line scanner, not a parser: the document has already parsed (``tomllib`` found no syntax error), so
it only has to follow table headers, arrays of tables, dotted and quoted keys, multi-line strings and
multi-line arrays. Paths are tuples of keys and array indices, as pydantic reports error locations:
``("tasks", 0, "request", "text", "max_length")``. A path that was not written out (an inline table's
inner key, a missing field) resolves to its longest written prefix: the line a reader should look at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Path = tuple[str | int, ...]


def _split_key(text: str) -> list[str]:
    """``a."b.c".d`` -> ``["a", "b.c", "d"]``."""
    keys: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            keys.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    keys.append("".join(current).strip())
    return keys


def _key_end(line: str) -> int:
    """Index of the ``=`` that ends the key of a key/value line, or -1."""
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return i
    return -1


class _Scanner:
    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.counts: dict[Path, int] = {}
        self.current: dict[Path, int] = {}
        self.table: Path = ()
        self.string_end: str | None = None
        """Inside a multi-line string: its closing delimiter."""
        self.depth = 0
        """Inside a multi-line array or inline table: bracket depth."""
        self.value_path: Path = ()
        self.element = -1
        self.element_open = False
        self.outer = ""
        """The bracket that opened the current value: elements are counted in arrays, not inline tables."""
        self.in_string: str | None = None

    def record(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    def resolve(self, keys: Sequence[str], *, new_array: bool) -> Path:
        out: Path = ()
        for i, key in enumerate(keys):
            out += (key,)
            if new_array and i == len(keys) - 1:
                index = self.counts.get(out, -1) + 1
                self.counts[out] = index
                self.current[out] = index
                out += (index,)
            elif out in self.current:
                out += (self.current[out],)
        return out

    def feed(self, raw: str, number: int) -> None:
        if self.string_end is not None:
            end = self.string_end
            if end in raw:
                self.string_end = None
                self._scan_value(raw[raw.index(end) + 3:], number)
            return
        if self.depth > 0:
            self._scan_value(raw, number)
            return
        line = raw.strip()
        if not line or line.startswith("#"):
            return
        if line.startswith("[["):
            end = line.find("]]")
            self.table = self.resolve(_split_key(line[2:end]), new_array=True)
            self.record(self.table, number)
            self.record(self.table[:-1], number)
            return
        if line.startswith("["):
            end = line.find("]")
            self.table = self.resolve(_split_key(line[1:end]), new_array=False)
            self.record(self.table, number)
            return
        eq = _key_end(line)
        if eq < 0:
            return
        self.value_path = self.table + tuple(_split_key(line[:eq]))
        self.record(self.value_path, number)
        self.element = -1
        self.element_open = False
        self._scan_value(line[eq + 1:], number)

    def _scan_value(self, text: str, number: int) -> None:
        """Follow strings and brackets; at depth 1 of an array, note the line each element starts on."""
        i = 0
        while i < len(text):
            ch = text[i]
            if self.in_string:
                if ch == "\\" and self.in_string == '"':
                    i += 2
                    continue
                if ch == self.in_string:
                    self.in_string = None
                i += 1
                continue
            triple = text[i:i + 3]
            if triple in ("'''", '"""'):
                close = text.find(triple, i + 3)
                if close < 0:
                    self.string_end = triple
                    return
                i = close + 3
                continue
            if ch == "#":
                return
            if ch in "\"'":
                self._element_start(number)
                self.in_string = ch
            elif ch in "[{":
                if self.depth >= 1:
                    self._element_start(number)
                else:
                    self.outer = ch
                self.depth += 1
            elif ch in "]}":
                self.depth -= 1
            elif ch == "," and self.depth == 1:
                self.element_open = False
            elif not ch.isspace():
                self._element_start(number)
            i += 1

    def _element_start(self, number: int) -> None:
        if self.depth == 1 and self.outer == "[" and not self.element_open:
            self.element += 1
            self.element_open = True
            self.record(self.value_path + (self.element,), number)


def key_lines(text: str) -> dict[Path, int]:
    """Path -> 1-based line of every key, table and array element written in ``text``."""
    scanner = _Scanner()
    for number, raw in enumerate(text.splitlines(), start=1):
        scanner.feed(raw, number)
    return scanner.lines


def line_of(lines: Mapping[Path, int], path: Sequence[str | int]) -> int | None:
    """The line of ``path``, or of its longest prefix that was written; ``None`` when nothing matches."""
    for end in range(len(path), 0, -1):
        found = lines.get(tuple(path[:end]))
        if found is not None:
            return found
    return None
