"""Measured fault maps: file → chip → exactly the listed cells change; bad maps fail clearly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from nf_core.chips import ChipConfig, faulty_cells, perturb_codes, stuck_values
from nf_core.deployed import DeployedModel
from nf_core.evaluate import evaluate
from nf_core.fault_maps import (
    evaluate_measured,
    fault_map_from_cells,
    load_fault_map,
    load_fault_maps,
    measured_codes,
    save_fault_map,
)
from nf_core.quant import QuantizedWeights

ROWS, COLS = 64, 128  # a 1 KiB array: layers of a few KiB wrap around it


def _qw(n: int = 2500, fill: int = 0) -> QuantizedWeights:
    half = n // 2
    return QuantizedWeights(
        ["a.weight", "b.weight"],
        [torch.Size([half]), torch.Size([n - half])],
        [0, half, n],
        torch.full((n,), fill, dtype=torch.int8),
        torch.ones(2),
        8,
    )


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_round_trip_changes_exactly_the_listed_cells(tmp_path, suffix):
    faults = [(0, 3, 1), (1, 8, 1), (0, 47, 0), (2, 127, 1)]
    path = save_fault_map(tmp_path / f"chip0{suffix}", faults, ROWS, COLS)
    chip = load_fault_map(path)
    assert (chip.rows, chip.cols, chip.cells.tolist()) == (ROWS, COLS, [3, 47, 136, 383])
    qw = _qw()
    qw.flat[5] = -1  # 0xFF: the stuck-at-0 cell (row 0, column 47 = byte 5, bit 7) clears its sign bit
    qw.flat[1250 + 5] = -1
    out = measured_codes(qw, chip, "wrap")
    expect = qw.flat.clone()
    a = ROWS * COLS // 8  # 1024 bytes; each layer starts at address 0 and wraps
    for lo, hi in ((0, 1250), (1250, 2500)):
        for base in range(lo, hi, a):
            for byte, value in ((0, 8), (17, 1), (5, 127), (2 * 16 + 15, -128)):
                # byte 5 is -1 only at the start of each layer; elsewhere it is 0 and stuck-at-0 keeps it
                if base + byte < hi and (byte != 5 or base == lo):
                    expect[base + byte] = value
    assert torch.equal(out, expect)
    assert int((out != qw.flat).sum()) == 2 * (3 * 2 + 1) == 14


@pytest.mark.parametrize("layout", ["wrap", "reference"])
def test_a_random_chip_written_as_a_map_gives_the_same_codes(tmp_path, layout):
    # consistency with nf_core.chips: same cells, same layouts, same bytes
    cfg = ChipConfig(0.02, "stuck_at", layout, ROWS, COLS)
    cells = faulty_cells(7, cfg.ber, ROWS * COLS)
    faults = np.stack([cells // COLS, cells % COLS, stuck_values(7, cells)], axis=1)
    chip = load_fault_map(save_fault_map(tmp_path / "c.npz", faults, ROWS, COLS))
    g = torch.Generator().manual_seed(0)
    qw = _qw(70_000)
    qw.flat.copy_(torch.randint(-127, 128, (70_000,), generator=g, dtype=torch.int8))
    assert torch.equal(measured_codes(qw, chip, layout), perturb_codes(qw, 7, cfg))


@pytest.mark.parametrize(
    "faults,rows,cols,message",
    [
        ([(0, 1, 2)], ROWS, COLS, "stuck_value 2; valid choices: 0, 1"),
        ([(64, 0, 1)], ROWS, COLS, "row 64, outside 0..63"),
        ([(0, 128, 1)], ROWS, COLS, "bit_column 128, outside 0..127"),
        ([(0, -1, 1)], ROWS, COLS, "bit_column -1"),
        ([(3, 5, 1), (1, 1, 0), (3, 5, 0)], ROWS, COLS, r"cell \(row 3, bit_column 5\) is listed twice"),
        ([(0, 1)], ROWS, COLS, r"shape \(K, 3\)"),
        ([(0, 1, 1)], ROWS, 100, "bit_columns a positive multiple of 8"),
        ([(0, 1.5, 1)], ROWS, COLS, "must be integers; found 1.5"),
    ],
)
def test_bad_maps_fail_clearly(faults, rows, cols, message):
    with pytest.raises(ValueError, match=message):
        fault_map_from_cells(np.array(faults), rows, cols, "m")


def test_bad_files(tmp_path):
    np.savez(tmp_path / "a.npz", faults=np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match="lacks array.*geometry"):
        load_fault_map(tmp_path / "a.npz")
    pq.write_table(pa.table({"row": [0], "bit_column": [0], "stuck_value": [1]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="metadata lacks 'rows'"):
        load_fault_map(tmp_path / "b.parquet")
    (tmp_path / "c.csv").write_text("row,bit_column,stuck_value\n")
    with pytest.raises(ValueError, match="unknown file type '.csv'"):
        save_fault_map(tmp_path / "c.csv", [], ROWS, COLS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .npz or .parquet files"):
        load_fault_maps(tmp_path / "empty")


def test_evaluate_on_measured_chips_matches_random_chips(tmp_path):
    # A measured map equal to random chip k scores exactly as nf_core.evaluate scores chip k.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4))
    base = DeployedModel(model)
    x, y = torch.rand(64, 3, 8, 8) * 2 - 1, torch.randint(0, 4, (64,))
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    gen = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())
    cfg = ChipConfig(0.05, "stuck_at", "wrap", ROWS, COLS)
    for k in (0, 1):
        cells = faulty_cells(k, cfg.ber, ROWS * COLS)
        save_fault_map(
            tmp_path / f"chip{k}.parquet",
            np.stack([cells // COLS, cells % COLS, stuck_values(k, cells)], 1),
            ROWS,
            COLS,
        )
    chips = load_fault_maps(tmp_path)
    got = evaluate_measured(base, loader, chips, gen)
    ref = evaluate(base, loader, cfg, gen, chip_seeds=[0, 1])
    assert got["pa_per_chip"] == ref["pa_per_chip"] and got["pa_nf_per_chip"] == ref["pa_nf_per_chip"]
    assert got["fault_model"] == "measured" and got["chip_names"] == ["chip0.parquet", "chip1.parquet"]
    assert got["ca"] == ref["ca"] and got["rp"] == pytest.approx(ref["rp"])


def test_fault_maps_from_an_s3_prefix(tmp_path, monkeypatch, s3_server):
    # orchestration's loader: maps listed and read through pyarrow's S3 filesystem (moto on loopback)
    import boto3

    from orchestration.store.fault_maps_store import load_fault_maps_uri

    for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    endpoint = s3_server  # the session's moto server (tests/conftest.py)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="maps")
    save_fault_map(tmp_path / "b.npz", [(1, 2, 1)], ROWS, COLS)
    save_fault_map(tmp_path / "a.parquet", [(0, 0, 0), (63, 127, 1)], ROWS, COLS)
    for p in ("b.npz", "a.parquet"):
        s3.upload_file(str(tmp_path / p), "maps", f"chipset/{p}")
    s3.put_object(Bucket="maps", Key="chipset/README.txt", Body=b"not a map")
    chips = load_fault_maps_uri("s3://maps/chipset", endpoint)
    assert [c.name for c in chips] == ["a.parquet", "b.npz"]
    assert chips[0].cells.tolist() == [0, ROWS * COLS - 1] and chips[1].cells.tolist() == [130]
    s3.put_object(Bucket="maps", Key="chipset/c.npz", Body=b"junk")
    with pytest.raises(ValueError, match=r"fault map c.npz: not a readable .npz file"):
        load_fault_maps_uri("s3://maps/chipset", endpoint)


def test_ber_conditioned_generator_runs_at_each_measured_chips_ber(tmp_path):
    from nf_core.generators import create_generator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    base = DeployedModel(model)
    x, y = torch.rand(16, 3, 32, 32) * 2 - 1, torch.randint(0, 4, (16,))
    g = create_generator("ConvS_BER")
    with torch.no_grad():
        g.film.weight.normal_(std=5.0)
    chips = [
        fault_map_from_cells([(0, 0, 1)], ROWS, COLS, "one"),
        fault_map_from_cells([(0, c, 1) for c in range(64)], ROWS, COLS, "many"),
    ]
    got = evaluate_measured(base, [(x, y)], chips, g)
    for chip, acc in zip(chips, got["pa_nf_per_chip"]):
        alone = evaluate_measured(base, [(x, y)], [chip], g)  # same chip, nothing else
        assert alone["pa_nf_per_chip"] == [acc]
        g.set_ber(chip.ber)
        w = base.qw.dequantized(measured_codes(base.qw, chip))
        with torch.no_grad():
            expect = 100.0 * float((base.logits(torch.clamp(x + g(x), -1, 1), w).argmax(1) == y).float().mean())
        assert acc == pytest.approx(expect)
