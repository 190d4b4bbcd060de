"""The one renderer of console tables (results, status, plan, estimates, profile): tabulate's "simple" format."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import tabulate as _tabulate

_LOCK = threading.Lock()  # MIN_PADDING is a module global of tabulate


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | str = "left") -> str:
    """Columns as wide as their widest cell, two spaces apart, a dashed rule under the header.

    ``align``: one of "left"/"right" for every column, or one per column. Cells are printed as
    given (no number parsing): callers format their numbers, so "44.47 ± 23.65" and "+12.58" keep their form.
    """
    aligns = [align] * len(headers) if isinstance(align, str) else list(align)
    if len(aligns) != len(headers):
        raise ValueError(f"{len(aligns)} alignments for {len(headers)} columns")
    cells = [["-" if c is None else str(c) for c in r] for r in rows]
    with _LOCK:
        saved = _tabulate.MIN_PADDING
        # tabulate widens each column to its header + 2 by default; ours are as wide as their widest cell
        _tabulate.MIN_PADDING = 0
        try:
            return _tabulate.tabulate(
                cells, headers=list(headers), tablefmt="simple", colalign=aligns, disable_numparse=True
            )
        finally:
            _tabulate.MIN_PADDING = saved


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of ``text`` behind ``prefix`` (tables printed under a title line)."""
    return "\n".join(prefix + line for line in text.splitlines())
