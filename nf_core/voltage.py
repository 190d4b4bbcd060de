"""Voltage → (BER, per-access energy) table: the data behind the energy saving (docs/method.md, cost model).

A table is a CSV with columns ``voltage, ber, energy_ratio`` (more columns, e.g. ``source``,
are kept as notes and ignored). ``energy_ratio`` is the dynamic energy of one SRAM read at that
voltage divided by the energy at nominal voltage, so a BER-0 (nominal) row, if present, must
say 1. ``voltage`` may be empty: only ``ber`` and ``energy_ratio`` enter the formulas.

The shipped table (nf_core/data/voltage_table.csv) holds the paper's one measured point plus
the seven operating-point BERs of the authors' reference code on a documented curve
(`curve_point`, docs/voltage_table.md): only the 1% row is measured, the others are modelled. Its
voltages are in units of Vmin, the lowest bit-error-free voltage, as in the paper's Figure 2:
0.83 Vmin gives a 1% BER, and the authors' energy figure is e_LV/e_NV = 0.694 there (the paper's text says
"approximately 30%" less energy; its Table 2 values imply 0.694). Absolute volts are not given.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nf_core.validation import check_ber

REQUIRED_COLUMNS = ("voltage", "ber", "energy_ratio")

# The documented curve behind the shipped table's modelled rows (docs/voltage_table.md).
# BER(V) is log-linear ("bit errors increase exponentially below Vmin", paper Sec. 2) through
# two anchors: the paper's measured point (0.83 Vmin, 1%), and Vmin itself, where the 2^20-cell
# (128 KiB) array is expected to hold one faulty cell (BER 2^-20). Dynamic energy per access
# scales with V^2 (the paper's "quadratic dependence"); V^2 = 0.689 at 0.83 Vmin, within 0.7% of
# the simulated 0.694, which the measured row keeps.
CURVE_ANCHORS = ((0.83, 0.01), (1.0, 2.0**-20))


@dataclass(frozen=True)
class VoltagePoint:
    """One operating point: supply voltage (may be unknown), its BER, its per-access energy ratio."""

    voltage: float | None
    ber: float
    energy_ratio: float


@dataclass(frozen=True)
class VoltageTable:
    points: tuple[VoltagePoint, ...]
    source: str  # where the table came from, for error messages

    def bers(self) -> list[float]:
        return [p.ber for p in self.points]

    def energy_ratio(self, ber: float) -> float:
        """e_LV / e_NV at ``ber``; a BER with no row is an error listing the BERs that exist."""
        ber = check_ber(ber)
        for p in self.points:
            # BERs come from CSV text and the command line: compare as numbers, not bit patterns.
            if math.isclose(p.ber, ber, rel_tol=1e-9, abs_tol=1e-15):
                return p.energy_ratio
        have = ", ".join(f"{b:g}" for b in self.bers())
        raise ValueError(
            f"no row for BER {ber:g} in voltage table {self.source}; BERs in the table: {have} "
            f"(add a row, or pass your own table with --voltage-table)"
        )

    def point(self, ber: float, interpolate: bool = False) -> VoltagePoint:
        """The row at ``ber``; with ``interpolate``, a BER between two rows gets voltage and energy
        linear in log10(BER) between its neighbours (never extrapolated beyond the table)."""
        ratio = None
        try:
            ratio = self.energy_ratio(ber)
        except ValueError:
            if not interpolate:
                raise
        if ratio is not None:
            return next(p for p in self.points if math.isclose(p.ber, ber, rel_tol=1e-9, abs_tol=1e-15))
        pts = sorted((p for p in self.points if p.ber > 0), key=lambda p: p.ber)
        lo = [p for p in pts if p.ber < ber]
        hi = [p for p in pts if p.ber > ber]
        if not lo or not hi:
            span = f"{pts[0].ber:g}..{pts[-1].ber:g}" if pts else "none"
            raise ValueError(
                f"BER {ber:g} is outside voltage table {self.source} (BER range {span}); "
                f"interpolation never extrapolates: add rows or pass your own table"
            )
        a, b = lo[-1], hi[0]
        t = (math.log10(ber) - math.log10(a.ber)) / (math.log10(b.ber) - math.log10(a.ber))
        volt = None if a.voltage is None or b.voltage is None else a.voltage + t * (b.voltage - a.voltage)
        return VoltagePoint(volt, ber, a.energy_ratio + t * (b.energy_ratio - a.energy_ratio))


def curve_point(ber: float) -> VoltagePoint:
    """The modelled operating point at ``ber`` (0 < ber <= 0.5): voltage in Vmin units, energy V²."""
    ber = check_ber(ber)
    if not 0 < ber <= 0.5:
        raise ValueError(f"curve_point: BER {ber!r} must be in (0, 0.5]")
    (v1, p1), (v0, p0) = CURVE_ANCHORS
    v = v0 + (v1 - v0) * (math.log10(ber) - math.log10(p0)) / (math.log10(p1) - math.log10(p0))
    return VoltagePoint(round(v, 4), ber, round(v * v, 4))


def _float(text: str, column: str, line: int, source: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"voltage table {source}, line {line}: column {column!r} is {text!r}, not a number") from None


def parse_voltage_table(text: str, source: str) -> VoltageTable:
    """Parse CSV text (see the module docstring for the columns)."""
    reader = csv.DictReader(text.splitlines())
    header = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"voltage table {source} lacks column(s) {', '.join(missing)}; "
            f"needs {', '.join(REQUIRED_COLUMNS)} (found: {', '.join(header) or 'no header'})"
        )
    points: list[VoltagePoint] = []
    for line, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        voltage = _float(row["voltage"], "voltage", line, source) if row["voltage"] else None
        ber = _float(row["ber"], "ber", line, source)
        ratio = _float(row["energy_ratio"], "energy_ratio", line, source)
        if not 0.0 <= ber <= 1.0:
            raise ValueError(f"voltage table {source}, line {line}: ber {ber:g} is outside [0, 1]")
        if not ratio > 0:
            raise ValueError(f"voltage table {source}, line {line}: energy_ratio {ratio:g} must be > 0")
        if ber == 0 and not math.isclose(ratio, 1.0):
            raise ValueError(
                f"voltage table {source}, line {line}: the nominal (BER 0) row must have "
                f"energy_ratio 1, since ratios are relative to nominal; got {ratio:g}"
            )
        if any(math.isclose(p.ber, ber, rel_tol=1e-9, abs_tol=1e-15) for p in points):
            raise ValueError(f"voltage table {source}, line {line}: BER {ber:g} appears twice")
        points.append(VoltagePoint(voltage, ber, ratio))
    if not points:
        raise ValueError(f"voltage table {source} has no rows")
    return VoltageTable(tuple(points), source)


def load_voltage_table(path: str | Path | None = None) -> VoltageTable:
    """Load a voltage table from ``path``, or the shipped paper table when ``path`` is None."""
    if path is None:
        data = resources.files("nf_core").joinpath("data", "voltage_table.csv")
        return parse_voltage_table(data.read_text(encoding="utf-8"), "nf_core/data/voltage_table.csv (shipped)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"voltage table {str(path)!r} does not exist; it must be a CSV with columns {', '.join(REQUIRED_COLUMNS)}"
        )
    return parse_voltage_table(path.read_text(encoding="utf-8"), repr(str(path)))


__all__ = ["CURVE_ANCHORS", "VoltagePoint", "VoltageTable", "curve_point", "load_voltage_table", "parse_voltage_table"]
