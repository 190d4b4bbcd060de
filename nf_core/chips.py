"""Chips: the SRAM bit-error model (docs/method.md, "The fault model" and "Memory layouts").

A chip is one SRAM array with its own random set of faulty cells, identified by an integer
seed. The BER p is the fraction of faulty cells. Conceptually every cell gets one uniform
number u per chip seed and is faulty at BER p when u < p; faults are therefore nested
across BERs. We never draw the numbers of the healthy cells: the sorted u values are
generated directly (Rényi's exponential spacings) together with a uniformly random order
of the cells, so sampling costs O(number of faulty cells).

Fault models: ``stuck_at`` (default; a faulty cell reads 0 or 1 with equal odds, fixed per
cell, so a stored bit changes with probability p/2) and ``flip`` (every faulty bit flips).

Memory layouts (how weight i of a layer meets the array; cell = row·cols + column):
  ``wrap``      default: weight i owns array byte a = i mod (rows·cols/8), i.e. cells 8·a + bit
                (bit least significant first); every layer starts at address 0.
  ``flat``      all weights of the model laid out once: a = global weight index.
  ``reference`` the authors' tiling, which packs b-bit weights densely: s = ⌊cols/b⌋ slots per
                row (16 at 8 bits, 32 at 4, 21 at 6) and runs of s² consecutive weights per row:
                weight i sits in row (i // s²) mod rows, slot i mod s, its bit j in column
                (i mod s)·b + j. Every layer restarts at row 0 and wraps past the last row; the
                cols − s·b leftover columns of a row hold nothing. At 8 bits this is
                a = ((i // 256) mod rows)·16 + i mod 16.
``wrap`` and ``flat`` give every weight one byte slot at every precision: for b < 8 its low b
cells hold the b stored bits, faults in the other cells change nothing, and the faulty code
is sign-extended from bit b-1 (a b-bit value stays a b-bit value). ``reference`` reproduces
the authors' code instead: faults force only the low b bits of the int8 code and the
sign-extension bits above them are never updated, so a faulty weight can leave the b-bit
range (at b = 4, code 3 with bit 3 stuck at 1 reads 11). The two agree at 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nf_core.quant import QuantizedWeights
from nf_core.validation import check_ber, check_fault_model, check_layout

_CHUNK = 4096  # first chunk of the random streams; chunk k has _CHUNK·2^k draws


@dataclass(frozen=True)
class ChipConfig:
    """What every chip of an experiment shares: BER, fault model and SRAM geometry."""

    ber: float
    fault_model: str = "stuck_at"
    layout: str = "wrap"
    rows: int = 8192
    cols: int = 128  # bit-columns per row

    def __post_init__(self) -> None:
        check_ber(self.ber)
        check_fault_model(self.fault_model)
        check_layout(self.layout)
        if self.rows < 1 or self.cols < 8 or self.cols % 8:
            raise ValueError(
                f"SRAM geometry rows={self.rows}, cols={self.cols}: need rows >= 1 and cols a multiple of 8"
            )

    @property
    def array_bytes(self) -> int:
        return self.rows * self.cols // 8


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"chip seed {seed!r} must be a non-negative integer")
    ss = np.random.SeedSequence(int(seed))
    a, b = ss.spawn(2)
    return np.random.Generator(np.random.PCG64(a)), np.random.Generator(np.random.PCG64(b))


def faulty_cell_count(seed: int, ber: float, n_cells: int) -> int:
    """How many of the chip's ``n_cells`` cells have u < ber (nested in ber by construction)."""
    if ber <= 0 or n_cells == 0:
        return 0
    if ber >= 1:
        return n_cells
    rng, _ = _streams(seed)
    threshold = -np.log1p(-ber)  # u_(k) < p  ⇔  S_k < -log(1 - p)
    s, k, size = 0.0, 0, _CHUNK
    while k < n_cells:
        e = rng.standard_exponential(size)
        denom = n_cells - np.arange(k, k + size, dtype=np.float64)
        spacing = np.divide(e, denom, out=np.full(size, np.inf), where=denom > 0)
        s_chunk = s + np.cumsum(spacing)  # S_k = Σ_j E_j / (C - j + 1): -log(1 - u_(k))
        below = int(np.searchsorted(s_chunk, threshold, side="left"))
        if below < size:
            return min(k + below, n_cells)
        s, k, size = float(s_chunk[-1]), k + size, size * 2
    return n_cells


def faulty_cells(seed: int, ber: float, n_cells: int) -> np.ndarray:
    """Indices of the chip's faulty cells at ``ber`` (int64, in order of increasing u)."""
    k = faulty_cell_count(seed, ber, n_cells)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == n_cells:
        return np.arange(n_cells, dtype=np.int64)
    _, rng = _streams(seed)
    # First k distinct values of an i.i.d. uniform stream = a uniformly random ordered k-subset.
    # Chunk sizes are fixed (not chosen from k), so every BER reads the same stream: nesting.
    # Draw about as many as k distinct values need in expectation, then de-duplicate once.
    need = -n_cells * np.log1p(-k / n_cells) * 1.01 + 64
    draws: list[np.ndarray] = []
    total, size = 0, _CHUNK
    while True:
        while total < need:
            draws.append(rng.integers(0, n_cells, size=size, dtype=np.int64))
            total, size = total + size, size * 2
        allv = np.concatenate(draws)
        if n_cells * allv.size < 2**62:
            # First occurrence of each value: sort (value, position) pairs packed in one int64
            # (a plain sort; np.unique's return_index needs a slower stable argsort).
            key = np.sort(allv * allv.size + np.arange(allv.size, dtype=np.int64))
            vals = key // allv.size
            first = key[np.concatenate(([True], vals[1:] != vals[:-1]))] % allv.size
        else:  # the packed key would overflow: huge arrays at BERs near 1
            first = np.unique(allv, return_index=True)[1]
        if first.size >= k:
            return allv[np.sort(first)[:k]]
        need = total + 1


def stuck_values(seed: int, cells: np.ndarray) -> np.ndarray:
    """The value (0/1) each faulty cell is stuck at: a fixed hash of (seed, cell), so it is the
    same at every BER (nesting) and independent of how many cells were drawn."""
    x = cells.astype(np.uint64) ^ np.uint64((int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):  # splitmix64 finaliser, wrapping arithmetic on purpose
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(1)).astype(np.uint8)


def reference_slots(cfg: ChipConfig, bits: int) -> int:
    """Weights per array row in the ``reference`` layout: ⌊cols/b⌋ (a row serves runs of its square)."""
    return cfg.cols // bits


def _byte_masks(
    seed: int, cfg: ChipConfig, n_cells: int, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per faulty array byte (reference layout: per b-bit slot): (index, clear, set, xor masks) over the stored bits."""
    cells = np.sort(faulty_cells(seed, cfg.ber, n_cells))  # grouped by byte (slot) from here on
    if cfg.layout == "reference":  # slot = row·s + column // b; equals the byte index at 8 bits
        s = reference_slots(cfg, bits)
        row, col = cells // cfg.cols, cells % cfg.cols
        byte, bit, keep = row * s + col // bits, (col % bits).astype(np.uint8), col < s * bits
    else:
        byte, bit = cells >> 3, (cells & 7).astype(np.uint8)
        keep = bit < bits  # cells beyond the b stored bits hold nothing
    byte, bit, cells = byte[keep], bit[keep], cells[keep]
    if byte.size == 0:
        empty = np.zeros(0, np.uint8)
        return np.zeros(0, np.int64), empty, empty, empty
    onehot = (np.uint8(1) << bit).astype(np.uint8)
    start = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    uniq = byte[start]
    faulty = np.bitwise_or.reduceat(onehot, start)
    zero = np.zeros_like(faulty)
    if cfg.fault_model == "flip":
        return uniq, zero, zero, faulty
    set_ = np.bitwise_or.reduceat(onehot * stuck_values(seed, cells), start)
    return uniq, faulty, set_, zero


def _layer_indices(cfg: ChipConfig, fbytes: np.ndarray, n: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Layer-local weight indices (< n) that sit on the faulty array bytes (slots), and which one each sits on."""
    src = np.arange(fbytes.size)
    if cfg.layout == "wrap":
        a = cfg.array_bytes
        k = np.arange(-(-n // a), dtype=np.int64)[:, None]
        idx, which = (fbytes[None, :] + a * k).ravel(), np.broadcast_to(src, (k.size, src.size)).ravel()
    else:  # reference: slot r·s + c  ←  i = (r + rows·k)·s² + s·j + c, j < s
        s = reference_slots(cfg, bits)
        r, c = fbytes // s, fbytes % s
        period = cfg.rows * s * s
        k = np.arange(-(-n // period), dtype=np.int64)[:, None, None]
        j = np.arange(s, dtype=np.int64)[None, :, None]
        idx = ((r[None, None, :] + cfg.rows * k) * s * s + s * j + c[None, None, :]).ravel()
        which = np.broadcast_to(src, (k.shape[0], j.shape[1], src.size)).ravel()
    keep = idx < n
    return idx[keep], which[keep]


def chip_fault_map(qw: QuantizedWeights, seed: int, cfg: ChipConfig) -> tuple[np.ndarray, np.ndarray]:
    """(global byte indices, packed masks) of every stored weight byte this chip touches.

    Masks are packed as clear | set << 8 | xor << 16 (int32); each index appears once.
    """
    fbytes, clear, set_, xor = _byte_masks(seed, cfg, _n_cells(qw, cfg), qw.bits)
    packed = clear.astype(np.int32) | set_.astype(np.int32) << 8 | xor.astype(np.int32) << 16
    if cfg.layout == "flat":
        return fbytes, packed
    idx, val = [], []
    for lo, hi in zip(qw.offsets[:-1], qw.offsets[1:]):
        i, w = _layer_indices(cfg, fbytes, hi - lo, qw.bits)
        idx.append(i + lo)
        val.append(packed[w])
    return np.concatenate(idx), np.concatenate(val)


def _n_cells(qw: QuantizedWeights, cfg: ChipConfig) -> int:
    return qw.numel * 8 if cfg.layout == "flat" else cfg.array_bytes * 8


def _apply_wrap(out: torch.Tensor, qw: QuantizedWeights, seed: int, cfg: ChipConfig) -> None:
    """Wrap layout: every layer meets the same array bytes, so the chip is a dense byte mask of
    the array's size broadcast over each layer's wraps (a few memory-bound int8 ops)."""
    fbytes, clear, set_, xor = _byte_masks(seed, cfg, _n_cells(qw, cfg), qw.bits)
    if fbytes.size == 0:
        return
    a = cfg.array_bytes
    where = torch.from_numpy(fbytes)
    ops = []
    for mask, op in ((clear, "and_not"), (set_, "or"), (xor, "xor")):
        if mask.any():
            dense = torch.zeros(a, dtype=torch.uint8)
            dense[where] = torch.from_numpy(mask)
            ops.append((op, (~dense if op == "and_not" else dense).to(out.device)))
    u = out.view(torch.uint8)
    for lo, hi in zip(qw.offsets[:-1], qw.offsets[1:]):
        k, r = divmod(hi - lo, a)
        for part, m in ((u[lo : lo + k * a].view(k, a), a), (u[lo + k * a : hi], r)):
            if part.numel() == 0:
                continue
            for op, dense in ops:
                d = dense if m == a else dense[:m]
                if op == "and_not":
                    part.bitwise_and_(d)
                elif op == "or":
                    part.bitwise_or_(d)
                else:
                    part.bitwise_xor_(d)


def _apply_sparse(out: torch.Tensor, qw: QuantizedWeights, seed: int, cfg: ChipConfig) -> None:
    """Flat and reference layouts: gather the touched bytes, change them, scatter them back."""
    idx_np, packed_np = chip_fault_map(qw, seed, cfg)
    if idx_np.size == 0:
        return
    dev = out.device
    idx = torch.from_numpy(idx_np).to(dev)
    packed = torch.from_numpy(packed_np).to(dev)
    clear, set_, xor = packed & 0xFF, (packed >> 8) & 0xFF, (packed >> 16) & 0xFF
    old = out[idx].to(torch.int32) & 0xFF  # two's-complement byte as 0..255
    out[idx] = (((old & ~clear) | set_) ^ xor).to(torch.uint8).view(torch.int8)


def perturb_codes(qw: QuantizedWeights, seed: int, cfg: ChipConfig) -> torch.Tensor:
    """The chip's stored codes: a new int8 buffer shaped like ``qw.flat`` (which is not changed).

    Integer-only arithmetic, with the fault map drawn on the CPU, so the result is
    bit-identical on every device.
    """
    out = qw.flat.clone()
    if cfg.ber == 0:
        return out
    (_apply_wrap if cfg.layout == "wrap" else _apply_sparse)(out, qw, seed, cfg)
    if qw.bits < 8 and cfg.layout != "reference":
        # Faults changed only the low b stored bits; rebuild the int8 value from them
        # (arithmetic shifts sign-extend bit b-1). The reference layout keeps the authors'
        # behaviour: the bits above the b stored ones stay as they were (see the module doc).
        sh = 8 - qw.bits
        out.bitwise_left_shift_(sh).bitwise_right_shift_(sh)
    return out


def bernoulli_codes(qw: QuantizedWeights, generator: torch.Generator, cfg: ChipConfig) -> torch.Tensor:
    """Per-bit Bernoulli masks over every stored bit (flat layout): the dense O(cells) baseline
    the benchmarks compare against. Not nested across BERs, not used by training."""
    b = qw.bits
    u = torch.rand(qw.numel, 8, generator=generator, device=qw.flat.device)
    faulty = u[:, :b] < cfg.ber
    weights = 2 ** torch.arange(b, device=qw.flat.device, dtype=torch.int32)
    fmask = (faulty.to(torch.int32) * weights).sum(1)
    old = qw.flat.to(torch.int32) & 0xFF
    if cfg.fault_model == "flip":
        new = old ^ fmask
    else:
        stuck = (torch.rand(qw.numel, b, generator=generator, device=qw.flat.device) < 0.5).to(torch.int32)
        new = (old & ~fmask) | ((stuck * weights).sum(1) & fmask)
    new = new & ((1 << b) - 1)
    return torch.where(new >= 1 << (b - 1), new - (1 << b), new).to(torch.int8)
