"""Measured fault maps: a real chip's faulty SRAM cells, applied to quantized weights as a chip.

File format (one chip per file; ``docs/fault_maps.md``):
  ``.npz``      arrays ``faults`` — integer, shape (K, 3), one row per faulty cell:
                (row, bit_column, stuck_value) — and ``geometry`` = [rows, bit_columns].
  ``.parquet``  columns ``row``, ``bit_column``, ``stuck_value`` (integers) and the geometry in
                the file's key-value metadata ``rows`` and ``bit_columns``.
A cell is (row, bit_column) of a ``rows × bit_columns`` array; the value is what it reads (0/1)
whatever was written ("stuck-at"). Geometry and cells use the conventions of nf_core.chips: bit
column c of a row is bit c % 8 (least significant first) of byte c // 8, so the cell index is
row·bit_columns + c, and the memory layouts (wrap, flat, reference) place weight bytes on array
bytes exactly as for random chips. The BER of a measured chip is K / (rows·bit_columns).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nf_core.chips import ChipConfig, _layer_indices
from nf_core.quant import QuantizedWeights
from nf_core.validation import check_layout

SUFFIXES = (".npz", ".parquet")


@dataclass(frozen=True)
class MeasuredChip:
    """One measured chip: sorted faulty cell indices (row·cols + column) and their stuck values."""

    name: str
    rows: int
    cols: int
    cells: np.ndarray  # int64, sorted, unique
    values: np.ndarray  # uint8, 0/1

    @property
    def ber(self) -> float:
        return self.cells.size / (self.rows * self.cols)

    def config(self, layout: str = "wrap") -> ChipConfig:
        """The chip's geometry as a ChipConfig (its BER is the measured one; the fault model field is
        only a placeholder: a measured chip's cells are stuck at their measured values)."""
        return ChipConfig(min(self.ber, 1.0), "stuck_at", check_layout(layout), self.rows, self.cols)


def fault_map_from_cells(faults: Any, rows: int, cols: int, name: str = "map") -> MeasuredChip:
    """Validate (row, bit_column, stuck_value) triples against the geometry; errors name the bad value."""
    for what, v in (("rows", rows), ("bit_columns", cols)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"fault map {name}: geometry {what} {v!r} must be an integer")  # noqa: TRY004 (CLI reports ValueError)
    rows, cols = int(rows), int(cols)
    if rows < 1 or cols < 8 or cols % 8:
        raise ValueError(
            f"fault map {name}: geometry rows={rows}, bit_columns={cols}: need rows >= 1 and "
            f"bit_columns a positive multiple of 8 (e.g. 8192 x 128, the 128 KiB array)"
        )
    arr = np.asarray(faults)
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"fault map {name}: faults must have shape (K, 3) = (row, bit_column, stuck_value); got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        try:
            bad_mask = ~(np.isfinite(arr) & (arr == np.round(arr)))
        except TypeError:
            raise ValueError(f"fault map {name}: entries must be integers; got dtype {arr.dtype}") from None
        if bad_mask.any():
            raise ValueError(f"fault map {name}: entries must be integers; found {arr[bad_mask][0].item()!r}")
    arr = arr.astype(np.int64)
    r, c, v = arr[:, 0], arr[:, 1], arr[:, 2]
    for what, col, hi in (("row", r, rows), ("bit_column", c, cols)):
        bad = np.flatnonzero((col < 0) | (col >= hi))
        if bad.size:
            raise ValueError(
                f"fault map {name}: entry {int(bad[0])} has {what} {int(col[bad[0]])}, outside "
                f"0..{hi - 1} of the {rows} x {cols} array"
            )
    bad = np.flatnonzero((v != 0) & (v != 1))
    if bad.size:
        raise ValueError(f"fault map {name}: entry {int(bad[0])} has stuck_value {int(v[bad[0]])}; valid choices: 0, 1")
    cells = r * cols + c
    order = np.argsort(cells, kind="stable")
    cells, v = cells[order], v[order]
    dup = np.flatnonzero(cells[1:] == cells[:-1])
    if dup.size:
        cell = int(cells[dup[0]])
        raise ValueError(f"fault map {name}: cell (row {cell // cols}, bit_column {cell % cols}) is listed twice")
    return MeasuredChip(name, rows, cols, cells, v.astype(np.uint8))


def parse_fault_map(data: bytes, name: str) -> MeasuredChip:
    """A fault map from a file's bytes; ``name`` (the file name) picks the format by its suffix."""
    suffix = Path(name).suffix.lower()
    if suffix == ".npz":
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"fault map {name}: not a readable .npz file ({e})") from None
        with z:
            missing = [k for k in ("faults", "geometry") if k not in z.files]
            if missing:
                raise ValueError(f"fault map {name}: lacks array(s) {', '.join(missing)}; has {', '.join(z.files)}")
            geometry = z["geometry"].ravel()
            if geometry.size != 2:
                raise ValueError(f"fault map {name}: geometry must be [rows, bit_columns]; got {geometry.tolist()}")
            return fault_map_from_cells(z["faults"], geometry[0], geometry[1], name)
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # only Parquet maps need it

        table = pq.read_table(io.BytesIO(data))
        cols = ("row", "bit_column", "stuck_value")
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise ValueError(
                f"fault map {name}: lacks column(s) {', '.join(missing)}; has {', '.join(table.column_names)}"
            )
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        geo = []
        for key in ("rows", "bit_columns"):
            if key not in meta:
                raise ValueError(f"fault map {name}: Parquet metadata lacks {key!r} (the array geometry)")
            try:
                geo.append(int(meta[key]))
            except ValueError:
                raise ValueError(f"fault map {name}: metadata {key} is {meta[key]!r}, not an integer") from None
        faults = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in cols], axis=1)
        return fault_map_from_cells(faults, geo[0], geo[1], name)
    raise ValueError(f"fault map {name}: unknown file type {suffix!r}; valid choices: {', '.join(SUFFIXES)}")


def load_fault_map(path: str | Path) -> MeasuredChip:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fault map {str(path)!r} does not exist")
    return parse_fault_map(path.read_bytes(), path.name)


def load_fault_maps(directory: str | Path) -> list[MeasuredChip]:
    """Every ``.npz`` / ``.parquet`` map in ``directory``, sorted by file name (one chip each)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"fault map directory {str(d)!r} does not exist")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise ValueError(f"fault map directory {str(d)!r} holds no {' or '.join(SUFFIXES)} files")
    return [load_fault_map(p) for p in files]


def save_fault_map(path: str | Path, faults: Any, rows: int, cols: int) -> Path:
    """Write a map in the format of ``path``'s suffix (validated first)."""
    path = Path(path)
    chip = fault_map_from_cells(faults, rows, cols, path.name)
    triples = np.stack([chip.cells // cols, chip.cells % cols, chip.values.astype(np.int64)], axis=1)
    if path.suffix.lower() == ".npz":
        np.savez(path, faults=triples, geometry=np.array([rows, cols], dtype=np.int64))
    elif path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"row": triples[:, 0], "bit_column": triples[:, 1], "stuck_value": triples[:, 2]})
        pq.write_table(table.replace_schema_metadata({"rows": str(rows), "bit_columns": str(cols)}), path)
    else:
        raise ValueError(
            f"fault map {path.name}: unknown file type {path.suffix!r}; valid choices: {', '.join(SUFFIXES)}"
        )
    return path


def measured_byte_masks(chip: MeasuredChip, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per faulty array byte: (byte index, clear mask, set mask) over the b stored bits."""
    byte, bit = chip.cells >> 3, (chip.cells & 7).astype(np.uint8)
    keep = bit < bits  # cells beyond the b stored bits hold nothing
    byte, bit, val = byte[keep], bit[keep], chip.values[keep]
    if byte.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8)
    onehot = (np.uint8(1) << bit).astype(np.uint8)
    start = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    return byte[start], np.bitwise_or.reduceat(onehot, start), np.bitwise_or.reduceat(onehot * val, start)


def measured_codes(qw: QuantizedWeights, chip: MeasuredChip, layout: str = "wrap") -> torch.Tensor:
    """The stored codes on a measured chip: a new int8 buffer like ``qw.flat`` (unchanged)."""
    cfg = chip.config(layout)
    out = qw.flat.clone()
    fbytes, clear, set_ = measured_byte_masks(chip, qw.bits)
    if fbytes.size:
        if layout == "flat":
            if qw.numel > cfg.array_bytes:
                raise ValueError(
                    f"fault map {chip.name}: flat layout needs the model's {qw.numel} weight bytes to fit "
                    f"the {cfg.array_bytes}-byte array; use layout 'wrap'"
                )
            idx, which = fbytes, np.arange(fbytes.size)
            keep = idx < qw.numel
            idx, which = idx[keep], which[keep]
        else:
            parts = [(_layer_indices(cfg, fbytes, hi - lo), lo) for lo, hi in zip(qw.offsets[:-1], qw.offsets[1:])]
            idx = np.concatenate([i + lo for (i, _), lo in parts])
            which = np.concatenate([w for (_, w), _ in parts])
        if idx.size:
            t_idx = torch.from_numpy(idx).to(out.device)
            c = torch.from_numpy(clear[which].astype(np.int32)).to(out.device)
            s = torch.from_numpy(set_[which].astype(np.int32)).to(out.device)
            old = out[t_idx].to(torch.int32) & 0xFF
            out[t_idx] = ((old & ~c) | s).to(torch.uint8).view(torch.int8)
    if qw.bits < 8:
        sh = 8 - qw.bits  # sign-extend the b stored bits, as for random chips
        out.bitwise_left_shift_(sh).bitwise_right_shift_(sh)
    return out


def measured_weights(qw: QuantizedWeights, chip: MeasuredChip, layout: str = "wrap") -> dict[str, torch.Tensor]:
    """Float weights of the base model on a measured chip (name → tensor), for `functional_call`."""
    return qw.dequantized(measured_codes(qw, chip, layout))


@torch.no_grad()
def evaluate_measured(
    base: Any,
    loader: Any,
    chips: Sequence[MeasuredChip],
    generator: torch.nn.Module | None = None,
    layout: str = "wrap",
) -> dict[str, Any]:
    """CA, PA and (with a generator) CA (NF), PA (NF), RP over measured chips: the metrics of
    nf_core.evaluate with the chip list replaced by the maps (``base`` is a DeployedModel).
    A BER-conditioned generator runs at each chip's measured BER (CA (NF) at its current BER)."""
    from nf_core.ber_conditioned import is_ber_conditioned, operating_ber
    from nf_core.evaluate import accuracy, evaluation_metrics
    from nf_core.transform import neuralfuse

    if not chips:
        raise ValueError("evaluate_measured needs at least one fault map")
    check_layout(layout)
    dev = base.device
    if generator is not None:
        generator.eval()
    clean = [(x.to(dev), y.to(dev)) for x, y in loader]
    fused = [(neuralfuse(x, generator), y) for x, y in clean] if generator is not None else None
    head = {
        "ber": float(np.mean([c.ber for c in chips])),
        "fault_model": "measured",
        "layout": layout,
        "bits": base.bits,
        "chips": len(chips),
        "chip_names": [c.name for c in chips],
        "chip_bers": [c.ber for c in chips],
    }
    ca = accuracy(base.logits, clean)
    pa, pa_nf = [], []
    for chip in chips:
        w = base.weights_from_codes(measured_codes(base.qw, chip, layout))  # folded / channels-last as deployed
        pa.append(accuracy(lambda x, w=w: base.logits(x, w), clean))
        if fused is not None:
            inputs = fused
            if is_ber_conditioned(generator):  # each measured chip has its own BER: deploy G at it
                with operating_ber(generator, chip.ber):
                    inputs = [(neuralfuse(x, generator), y) for x, y in clean]
            pa_nf.append(accuracy(lambda x, w=w: base.logits(x, w), inputs))
    ca_nf = accuracy(base.logits, fused) if fused is not None else None
    return evaluation_metrics(head, ca, pa, generator, ca_nf, pa_nf)


__all__ = [
    "SUFFIXES",
    "MeasuredChip",
    "evaluate_measured",
    "fault_map_from_cells",
    "load_fault_map",
    "load_fault_maps",
    "measured_byte_masks",
    "measured_codes",
    "measured_weights",
    "parse_fault_map",
    "save_fault_map",
]
