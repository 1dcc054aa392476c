"""The live terminal view of a local subnet: blocks, rounds, per-miner scores, weights and calls."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from inference_subnet.localnet.report import MinerRow


def render(
    *,
    chain: str,
    netuid: int,
    blocks: str,
    elapsed: float,
    duration: float | None,
    rounds: int,
    organic: tuple[int, int, int],
    weight_sets: int,
    rows: Sequence[MinerRow],
) -> Group:
    """One frame of the view (also the end-of-run summary)."""
    left = "until Ctrl-C" if duration is None else f"{max(0.0, duration - elapsed):.0f}s left"
    header = Text.assemble(
        ("local subnet ", "bold"), (f"netuid {netuid} on {chain} chain", "cyan"),
        f"  {blocks}  rounds {rounds}  organic {organic[1]}/{organic[0]} ok ({organic[2]} correct)  weight sets {weight_sets}",
        f"  {elapsed:.0f}s ({left})",
    )
    table = Table(expand=False)
    for column, justify in (("uid", "right"), ("behaviour", "left"), ("port", "right"), ("score", "right"),
                            ("weight", "right"), ("synthetic", "right"), ("organic", "right"),
                            ("wrong", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in sorted(rows, key=lambda r: -r.weight):
        style = "green" if row.behaviour == "honest" else "red"
        table.add_row(str(row.uid), Text(row.behaviour, style=style), str(row.port), f"{row.score:.3f}",
                      f"{row.weight:.3f}", str(row.synthetic_calls), str(row.organic_served),
                      str(row.organic_bad))
    return Group(header, table)
