"""Chips: the SRAM bit-error model (docs/method.md, "The fault model" and "Memory layouts").

A chip is one SRAM array with its own random set of faulty cells, identified by an integer
seed. The BER p is the fraction of faulty cells. Conceptually every cell gets one uniform
number u per chip seed and is faulty at BER p when u < p; faults are therefore nested
across BERs. We never draw the numbers of the healthy cells: the sorted u values are
generated directly (Rényi's exponential spacings) together with a uniformly random order
of the cells, so sampling costs O(number of faulty cells).

Fault models: ``stuck_at`` (default; a faulty cell reads 0 or 1 with equal odds, fixed per
cell, so a stored bit changes with probability p/2) and ``flip`` (every faulty bit flips).

Memory layouts (how weight byte i of a layer meets array byte a; cell = 8·a + bit, bit
least significant first):
  ``wrap``      default: a = i mod (rows·cols/8); every layer starts at address 0.
  ``flat``      all weights of the model laid out once: a = global byte index.
  ``reference`` the authors' tiling: a = ((i // 256) mod rows)·(cols/8) + i mod (cols/8).
For b-bit weights (b < 8) every weight still occupies one byte slot; its low b cells hold
the b stored bits and faults in the unused cells change nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nf_core.quant import QuantizedWeights
from nf_core.validation import check_ber, check_fault_model, check_layout

_CHUNK = 4096  # first chunk of the random streams; chunk k has _CHUNK·2^k draws
_REFERENCE_RUN = 256  # the reference tiling served 256 consecutive weights from one row


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
            raise ValueError(f"SRAM geometry rows={self.rows}, cols={self.cols}: need rows >= 1 and cols a multiple of 8")

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


def _byte_masks(seed: int, cfg: ChipConfig, n_cells: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per faulty array byte: (byte index, clear mask, set mask, xor mask) over the stored bits."""
    cells = np.sort(faulty_cells(seed, cfg.ber, n_cells))  # grouped by byte from here on
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


def _layer_indices(cfg: ChipConfig, fbytes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer-local byte indices (< n) that sit on the faulty array bytes, and which byte each sits on."""
    src = np.arange(fbytes.size)
    if cfg.layout == "wrap":
        a = cfg.array_bytes
        k = np.arange(-(-n // a), dtype=np.int64)[:, None]
        idx, which = (fbytes[None, :] + a * k).ravel(), np.broadcast_to(src, (k.size, src.size)).ravel()
    else:  # reference: a = r·B + c  ←  i = (r + rows·k)·256 + B·j + c, j < 256/B
        bpr = cfg.cols // 8
        r, c = fbytes // bpr, fbytes % bpr
        period = cfg.rows * _REFERENCE_RUN
        k = np.arange(-(-n // period), dtype=np.int64)[:, None, None]
        j = np.arange(_REFERENCE_RUN // bpr, dtype=np.int64)[None, :, None]
        idx = ((r[None, None, :] + cfg.rows * k) * _REFERENCE_RUN + bpr * j + c[None, None, :]).ravel()
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
        i, w = _layer_indices(cfg, fbytes, hi - lo)
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
        for part, m in ((u[lo:lo + k * a].view(k, a), a), (u[lo + k * a:hi], r)):
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
    if qw.bits < 8:
        # Faults changed only the low b stored bits; rebuild the int8 value from them
        # (arithmetic shifts sign-extend bit b-1).
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
