"""The bit-error model: statistics, nesting, seeds, layouts, precision, immutability."""

import math

import numpy as np
import pytest
import torch

from nf_core.chips import ChipConfig, bernoulli_codes, faulty_cell_count, faulty_cells, perturb_codes, stuck_values
from nf_core.deployed import DeployedModel
from nf_core.models import create_model
from nf_core.quant import QuantizedWeights, quantize_model


def _qw(sizes: list[int], bits: int = 8, seed: int = 0) -> QuantizedWeights:
    """A synthetic model: layers of random codes in the b-bit range."""
    g = torch.Generator().manual_seed(seed)
    top = 2 ** (bits - 1) - 1
    flat = torch.randint(-top, top + 1, (sum(sizes),), generator=g, dtype=torch.int8)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return QuantizedWeights(
        [f"l{i}.weight" for i in range(len(sizes))],
        [torch.Size([s]) for s in sizes],
        offsets,
        flat,
        torch.ones(len(sizes)),
        bits,
    )


def _changed_bits(qw: QuantizedWeights, codes: torch.Tensor) -> np.ndarray:
    """(numel, 8) bool: which stored bits differ from the clean codes."""
    x = (codes.view(torch.uint8) ^ qw.flat.view(torch.uint8)).numpy()
    return np.unpackbits(x[:, None], axis=1, bitorder="little").astype(bool)


@pytest.mark.parametrize("layout", ["wrap", "flat", "reference"])
@pytest.mark.parametrize("fault_model,factor", [("stuck_at", 0.5), ("flip", 1.0)])
def test_changed_bit_fraction(layout: str, fault_model: str, factor: float) -> None:
    p = 0.02
    qw = _qw([300_000, 200_000])
    cfg = ChipConfig(p, fault_model, layout)
    if layout == "flat":
        n_cells = qw.numel * 8
    elif layout == "wrap":  # every layer reuses the array's cells: the independent trials are its cells
        n_cells = cfg.array_bytes * 8
    else:  # reference: one 16-byte row serves 256 weights, so few distinct cells are in use
        n_cells = min(-(-300_000 // 256), cfg.rows) * 16 * 8
    frac = np.mean([_changed_bits(qw, perturb_codes(qw, s, cfg)).mean() for s in range(4)])
    expected = factor * p
    sigma = math.sqrt(expected * (1 - expected) / (4 * n_cells))
    assert abs(frac - expected) < 4 * sigma, (frac, expected, sigma)


def test_faulty_cell_count_is_binomial() -> None:
    n, p = 1_000_000, 0.01
    counts = np.array([faulty_cell_count(s, p, n) for s in range(20)])
    sigma = math.sqrt(n * p * (1 - p) / 20)
    assert abs(counts.mean() - n * p) < 4 * sigma
    assert counts.std() > 0


def test_faulty_cells_are_distinct_and_in_range() -> None:
    cells = faulty_cells(3, 0.05, 100_000)
    assert len(np.unique(cells)) == len(cells) and cells.min() >= 0 and cells.max() < 100_000
    assert len(faulty_cells(3, 0.0, 100)) == 0 and len(faulty_cells(3, 1.0, 100)) == 100


@pytest.mark.parametrize("layout", ["wrap", "flat"])
def test_nested_across_bers(layout: str) -> None:
    qw = _qw([400_000])
    prev = None
    for p in (0.001, 0.005, 0.01, 0.03):
        cells = set(faulty_cells(11, p, 10**6).tolist())
        changed = _changed_bits(qw, perturb_codes(qw, 11, ChipConfig(p, "stuck_at", layout)))
        if prev is not None:
            assert prev[0] <= cells  # faulty cells only grow as the voltage drops
            assert not (prev[1] & ~changed).any()  # a bit stuck at low BER stays stuck
            assert changed.sum() > prev[1].sum()
        prev = (cells, changed)


def test_seed_determinism() -> None:
    qw = _qw([250_000])
    cfg = ChipConfig(0.01)
    a, b, c = perturb_codes(qw, 5, cfg), perturb_codes(qw, 5, cfg), perturb_codes(qw, 6, cfg)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_wrap_layout_layers_share_fault_positions() -> None:
    qw = _qw([150_000, 150_000])
    cfg = ChipConfig(0.02, "flip", "wrap")
    ch = _changed_bits(qw, perturb_codes(qw, 2, cfg))
    a = cfg.array_bytes
    first, second = ch[:150_000], ch[150_000:]
    assert first.any()
    assert np.array_equal(first, second)  # both layers start at address 0
    assert np.array_equal(first[: 150_000 - a], first[a:])  # and wrap around the 128 KiB array


def test_flat_layout_layers_are_independent() -> None:
    qw = _qw([150_000, 150_000])
    ch = _changed_bits(qw, perturb_codes(qw, 2, ChipConfig(0.02, "flip", "flat")))
    first, second = ch[:150_000], ch[150_000:]
    overlap = (first & second).sum()
    assert overlap < 0.1 * first.sum()  # independent: ~p of the faults coincide, not all


def test_reference_layout_tiling() -> None:
    # Reference: weight byte i meets array byte (row (i // 256) % 8192, column i % 16).
    qw = _qw([8192 * 256 + 600])
    ch = _changed_bits(qw, perturb_codes(qw, 4, ChipConfig(0.01, "flip", "reference")))
    i = np.arange(qw.numel)
    array_byte = ((i // 256) % 8192) * 16 + i % 16
    for probe in range(0, 131_072, 7919):  # bytes on the same array byte see the same faults
        rows = ch[array_byte == probe]
        assert (rows == rows[0]).all()
    assert ch.any()


@pytest.mark.parametrize("bits", [2, 4, 6])
def test_low_precision_faults_hit_only_stored_bits(bits: int) -> None:
    qw = _qw([300_000], bits=bits)
    codes = perturb_codes(qw, 1, ChipConfig(0.05, "flip"))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert codes.min() >= lo and codes.max() <= hi  # still a b-bit two's-complement value
    ch = _changed_bits(qw, codes)
    stored = ((codes.view(torch.uint8) ^ qw.flat.view(torch.uint8)) & ((1 << bits) - 1)).numpy()
    frac = np.unpackbits(stored).sum() / (qw.numel * bits)
    assert abs(frac - 0.05) < 0.005
    assert ch.any()


def test_applying_chips_never_changes_the_base_model() -> None:
    model = create_model("resnet18", width=0.125)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = DeployedModel(model)
    clean = base.qw.flat.clone()
    for layout in ("wrap", "flat", "reference"):
        w = base.chip_weights(1, ChipConfig(0.05, layout=layout))
        assert any(not torch.equal(w[n], base.clean_weights[n]) for n in w)
    assert torch.equal(base.qw.flat, clean)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(base.module.state_dict()[k], v) for k, v in before.items())


def test_real_model_statistics() -> None:
    qw = quantize_model(create_model("resnet18", width=0.25))
    frac = _changed_bits(qw, perturb_codes(qw, 0, ChipConfig(0.01, layout="flat"))).mean()
    sigma = math.sqrt(0.005 / (qw.numel * 8))
    assert abs(frac - 0.005) < 4 * sigma


def test_bernoulli_baseline_statistics() -> None:
    qw = _qw([200_000])
    codes = bernoulli_codes(qw, torch.Generator().manual_seed(0), ChipConfig(0.02, "flip", "flat"))
    assert abs(_changed_bits(qw, codes).mean() - 0.02) < 0.001


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(ber=1.5), "BER"),
        (dict(ber=-0.1), "BER"),
        (dict(ber=0.01, fault_model="random"), "stuck_at"),
        (dict(ber=0.01, layout="tiled"), "wrap"),
        (dict(ber=0.01, cols=12), "geometry"),
    ],
)
def test_bad_chip_configs(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ChipConfig(**kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)")
@pytest.mark.parametrize("layout", ["wrap", "flat", "reference"])
def test_cpu_and_gpu_chips_are_bit_identical(layout: str) -> None:
    qw = quantize_model(create_model("resnet18", width=0.5))
    cfg = ChipConfig(0.01, layout=layout)
    cpu = perturb_codes(qw, 9, cfg)
    gpu = perturb_codes(qw.to("cuda"), 9, cfg).cpu()
    assert torch.equal(cpu, gpu)
    wc, wg = qw.dequantized(cpu), qw.to("cuda").dequantized(perturb_codes(qw.to("cuda"), 9, cfg))
    assert all(torch.equal(wc[n], wg[n].cpu()) for n in wc)


# ---------------------------------------------------------------- the authors' mapping below 8 bits
def _restated(qw: QuantizedWeights, seed: int, cfg: ChipConfig) -> tuple[np.ndarray, set]:
    """Chip codes and changed (layer, weight, bit) cells, restated in plain loops from the layout's
    definition: ``reference`` — ⌊cols/b⌋ slots per row, runs of ⌊cols/b⌋² weights per row, restart per
    layer, wrap past the last row, only the low b bits forced (no sign extension); ``wrap`` — byte
    i mod (array bytes), low b bits, then sign-extended from bit b-1."""
    b = qw.bits
    faulty = faulty_cells(seed, cfg.ber, cfg.rows * cfg.cols)
    stuck = dict(zip(faulty.tolist(), stuck_values(seed, faulty).tolist()))
    out, changed = qw.flat.numpy().copy(), set()
    for layer, (lo, hi) in enumerate(zip(qw.offsets[:-1], qw.offsets[1:])):
        for i in range(hi - lo):
            if cfg.layout == "reference":
                s = cfg.cols // b
                first_cell = ((i // (s * s)) % cfg.rows) * cfg.cols + (i % s) * b
            else:
                first_cell = 8 * (i % cfg.array_bytes)
            v = int(out[lo + i]) & 0xFF
            for j in range(b):
                cell = first_cell + j
                if cell not in stuck:
                    continue
                old = (v >> j) & 1
                new = stuck[cell] if cfg.fault_model == "stuck_at" else 1 - old
                if new != old:
                    changed.add((layer, i, j))
                    v ^= 1 << j
            if cfg.layout != "reference" and v & (1 << (b - 1)):
                v |= 0xFF << b  # sign extension
            elif cfg.layout != "reference":
                v &= (1 << b) - 1
            out[lo + i] = (v & 0xFF) - 256 if v & 0x80 else v & 0xFF
    return out, changed


def _changed_cells(qw: QuantizedWeights, codes: torch.Tensor) -> set:
    ch = _changed_bits(qw, codes)
    layer = np.searchsorted(np.asarray(qw.offsets), np.arange(qw.numel), side="right") - 1
    return {(int(layer[g]), int(g - qw.offsets[layer[g]]), int(j)) for g, j in zip(*np.nonzero(ch))}


@pytest.mark.parametrize("bits", [4, 6])
@pytest.mark.parametrize("fault_model", ["stuck_at", "flip"])
def test_reference_layout_packs_like_the_authors(bits: int, fault_model: str) -> None:
    # 4 rows: a row serves 32·32 (b=4) or 21·21 (b=6) weights, so these layers wrap past the array.
    cfg = ChipConfig(0.08, fault_model, "reference", rows=4)
    qw = _qw([5000, 333, 9001], bits=bits, seed=1)
    codes = perturb_codes(qw, 5, cfg)
    expected, changed = _restated(qw, 5, cfg)
    assert changed and _changed_cells(qw, codes) == changed
    assert np.array_equal(codes.numpy(), expected)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert ((codes < lo) | (codes > hi)).any()  # faulty weights leave the b-bit range, as the authors' did
    flipped = (codes.view(torch.uint8) ^ qw.flat.view(torch.uint8)).numpy()
    assert not (flipped >> bits).any()  # the sign-extension bits are never written


@pytest.mark.parametrize("bits", [4, 6])
def test_wrap_layout_below_8_bits_sign_extends(bits: int) -> None:
    cfg = ChipConfig(0.08, "stuck_at", "wrap", rows=4)
    qw = _qw([700, 333, 1001], bits=bits, seed=2)
    codes = perturb_codes(qw, 6, cfg)
    expected, changed = _restated(qw, 6, cfg)
    assert np.array_equal(codes.numpy(), expected)
    assert changed and {c for c in _changed_cells(qw, codes) if c[2] < bits} == changed
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1


def test_reference_layout_at_8_bits_keeps_its_tiling() -> None:
    # At 8 bits the dense packing is the byte tiling: 16 slots per row, runs of 256.
    cfg = ChipConfig(0.05, "flip", "reference", rows=4)
    qw = _qw([3000, 4500], bits=8, seed=3)
    expected, changed = _restated(qw, 7, cfg)
    codes = perturb_codes(qw, 7, cfg)
    assert np.array_equal(codes.numpy(), expected) and _changed_cells(qw, codes) == changed
