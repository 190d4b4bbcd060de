"""Cost model (docs/method.md, cost model): parameters, MACs, total weight-memory accesses (TWMA), energy saving.

TWMA is SCALE-SIM 3.0.0's "SRAM Filter Reads" summed over one topology row per Conv2d,
ConvTranspose2d and Linear layer (1×1 shortcuts and the classifier included), for an
output-stationary ('os') 32×32 systolic array with 256 KB of filter SRAM. The simulator takes
minutes per network and crashes with numpy >= 2.4, so the count is computed in closed form here;
tests/test_cost.py runs SCALE-SIM itself on real layers and checks that the two agree.

The topology rows (what the paper fed SCALE-SIM, recovered from its Table 6):
- Conv2d: the input map padded by 2·padding (every registered conv has padding K//2), its kernel,
  channels, filters and stride. SCALE-SIM rounds the output up, OH = ceil((H' − K + S) / S):
  a stride-2 3×3 conv on a padded 34×34 map gives 17×17, where PyTorch gives 16×16.
- Linear: a 1×1 convolution on a 1×1 input.
- ConvTranspose2d, which SCALE-SIM lacks: the paper's stand-in, a stride-1 convolution with input
  and output swapped. Its input is the transposed conv's output map padded by 2·padding, its
  channels are the transposed conv's outputs, its filters the transposed conv's inputs.

Closed form for the os dataflow: output pixels go to the array's 32 rows and filters to its 32
columns; each fold of at most 32 pixels streams every weight of its filters once, so
    SRAM Filter Reads = ceil(OH·OW / 32) · K_h·K_w·C_in·C_out.

Unit convention: the paper's TWMA is SCALE-SIM's count divided by 8 (READS_PER_ACCESS). SCALE-SIM
counts one read per 8-bit weight; the paper's SRAM is 64 bits wide (a 512×64-bit array), so one
access fetches eight weights. This reproduces the paper's Table 6 exactly for all five CIFAR base
models (ResNet18: 22,047,744 / 8 = 2,755,968) and for all six generators. Energy saving depends
only on the ratio TWMA_gen / TWMA_base, so the unit never changes it.

Generator padding (GENERATOR_PADDING): the paper's topology padded the input map of *every* generator
layer by 2, whatever the layer's own padding — the UNets' 1×1 output conv and their 2×2 transposed
convs (stand-in input: the 2H map the up step restores, plus 2) included — while base-model layers keep
their declared padding (ResNet's 1×1 shortcuts unpadded). Only the UNets have such layers, so the rule
changes nothing else. Candidates checked for the UNets (TWMA; paper 180,894 / 45,711; the reads were
confirmed by running SCALE-SIM 3.0.0 on the whole UNet topologies):
  declared padding (the float UNet, ConvT p0):              173,696 / 43,904  (−4.0% / −4.0%)
  authors' quantized UNet (ConvT p1, then zero-padded back): 173,696 / 43,904  — the stand-in sees
      the 2H−2 output + 2·1 = 2H, the same map as p0
  ConvT stand-ins padded by 2, 1×1 out conv as declared:     180,864 / 45,696  (−30 / −15)
  every generator layer padded by 2 (adopted):               180,894 / 45,711  exact
  up-sampling / concatenation as layers: they hold no weights, so SCALE-SIM reads no filters for them
      (0 added); no other weighted row fits the remaining differences.

MACs and parameters come from ptflops (what the paper used) at batch 1, with the conventions of
ptflops <= 0.7: only modules are counted (0.7.5's functional patching counts nn.ReLU and pooling
modules twice and torch.relu never), and a transposed conv costs its kernel volume per *output*
position (0.7.5 charges input positions). That reproduces the paper's Table 7 to its printed digits
for every generator and VGG; ResNet MACs come out 0.1-0.2% lower because nf_core's blocks apply
torch.relu, which module hooks do not see, where the paper's code used nn.ReLU modules. The ViT's
Linear layers count every token as an output position (TWMA: ceil(T/32) folds per weight matrix);
its attention matmuls have no stored weights, so they add MACs (2·T²·dim per block) but no TWMA
(nf_core/models/vit.py). Models are
built on the meta device, so even the 139M-parameter ImageNet VGG19 is profiled in milliseconds.

Counts of registered networks depend only on the architecture, the dataset's shape (classes, input
size) and the width multiplier, so they are cached: in memory, and in a shipped table
(nf_core/data/cost_counts.json, every registered model × dataset shape × TABLE_WIDTHS and every
generator × input size) that is used only while the fingerprint of the files defining the networks
and this count (COUNT_SOURCES, plus ptflops' version) equals the one it was written with. That
keeps `nf profile`, `nf select` and `nf report` free of torch imports and model builds for the usual
networks; any other network or width is counted as above. Regenerate the table with
`python -m nf_core.cost` after changing an architecture (tests/test_cost.py checks it is current).

Energy convention: a saving is priced on networks of one width, printed beside it
(``energy_convention``): by default the sweep's own networks (its ``width``), or the paper's
full-size networks (width 1) on request. ``network_saving`` is the one pricing used by
`nf profile`, the report's energy section and `nf select`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import math
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nf_core import catalog
from nf_core.validation import PAPER_GENERATORS, check_choice
from nf_core.voltage import VoltageTable, load_voltage_table

if TYPE_CHECKING:  # torch is imported only when a network must really be counted (a cache miss)
    import torch
    import torch.nn as nn

ARRAY_ROWS = 32  # the 32×32 array's rows: output pixels per fold in the os dataflow
READS_PER_ACCESS = 8  # 8-bit weights per 64-bit SRAM word: paper TWMA = SCALE-SIM reads / 8
GENERATOR_PADDING = 1  # the paper's topology padded every generator layer's input by 2·1 (see notes)

# dataset -> (num_classes, input_size); profiling never touches data on disk.
DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "cifar10": (10, 32),
    "cifar100": (100, 32),
    "gtsrb": (43, 32),
    "imagenet10": (10, 224),
    "digits": (10, 32),
}


@dataclass(frozen=True)
class Layer:
    """One SCALE-SIM topology row (conv mode): padded input map, filter, channels, filters, stride."""

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    num_filters: int
    stride: int

    @property
    def ofmap(self) -> tuple[int, int]:
        """Output size as SCALE-SIM computes it (rounded up)."""
        s = self.stride
        return math.ceil((self.ifmap_h - self.filter_h + s) / s), math.ceil((self.ifmap_w - self.filter_w + s) / s)

    @property
    def weights(self) -> int:
        return self.filter_h * self.filter_w * self.channels * self.num_filters


def layer_filter_reads(layer: Layer, array_rows: int = ARRAY_ROWS) -> int:
    """SCALE-SIM's "SRAM Filter Reads" for one layer, os dataflow: ceil(OH·OW / rows) · weights."""
    oh, ow = layer.ofmap
    return math.ceil(oh * ow / array_rows) * layer.weights


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _layer_row(name: str, mod: nn.Module, inp: torch.Tensor, out: torch.Tensor, min_padding: int = 0) -> Layer:
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        positions = inp.numel() // (inp.shape[0] * mod.in_features)  # 1 for (B, F) inputs
        return Layer(name, 1, positions, 1, 1, mod.in_features, mod.out_features, 1)
    if mod.groups != 1 or _pair(mod.dilation) != (1, 1) or isinstance(mod.padding, str):
        raise NotImplementedError(
            f"layer {name!r}: TWMA supports ungrouped, undilated convs with numeric "
            f"padding (every registered model and generator has only those)"
        )
    (kh, kw), (ph, pw), (sh, sw) = _pair(mod.kernel_size), _pair(mod.padding), _pair(mod.stride)
    ph, pw = max(ph, min_padding), max(pw, min_padding)
    if isinstance(mod, nn.ConvTranspose2d):
        # Stand-in: stride-1 conv from the transposed conv's output back to its input channels.
        oh, ow = out.shape[-2:]
        return Layer(name, oh + 2 * ph, ow + 2 * pw, kh, kw, mod.out_channels, mod.in_channels, 1)
    if sh != sw:
        raise NotImplementedError(f"layer {name!r}: SCALE-SIM's conv topology has one stride; got {(sh, sw)}")
    h, w = inp.shape[-2:]
    return Layer(name, h + 2 * ph, w + 2 * pw, kh, kw, mod.in_channels, mod.out_channels, sh)


def _probe_input(module: nn.Module, input_size: int) -> torch.Tensor:
    import torch

    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    return torch.zeros(1, 3, input_size, input_size, device=device)


def scalesim_layers(module: nn.Module, input_size: int, min_padding: int = 0) -> list[Layer]:
    """SCALE-SIM topology rows of ``module`` in execution order, from one forward pass at batch 1.

    Every conv row's input is padded by at least 2·``min_padding`` (GENERATOR_PADDING for generators).
    Works on meta-device modules (shapes only). The module's train/eval modes are restored.
    """
    import torch
    import torch.nn as nn

    rows: list[Layer] = []
    named = {m: n for n, m in module.named_modules()}

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        rows.append(_layer_row(named[mod] or type(mod).__name__, mod, inputs[0], output, min_padding))

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()  # BatchNorm on one sample needs eval mode
        with torch.no_grad():
            module(_probe_input(module, input_size))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return rows


def twma(module: nn.Module, input_size: int, min_padding: int = 0) -> int:
    """Total weight-memory accesses in the paper's unit: ceil(Σ SRAM Filter Reads / 8)."""
    reads = sum(layer_filter_reads(layer) for layer in scalesim_layers(module, input_size, min_padding))
    return -(-reads // READS_PER_ACCESS)


def _conv_transpose_macs(module: nn.ConvTranspose2d, inputs: tuple, output: torch.Tensor) -> None:
    # ptflops <= 0.7 (the paper's numbers): kernel volume per *output* position, plus bias.
    positions = output.shape[0] * math.prod(output.shape[2:])
    per_position = math.prod(module.kernel_size) * module.in_channels * (module.out_channels // module.groups)
    bias = module.out_channels * positions if module.bias is not None else 0
    module.__flops__ += int(per_position * positions + bias)


def count_params_macs(module: nn.Module, input_size: int) -> tuple[int, int]:
    """(parameters, MACs) at batch 1; MACs by ptflops on a copy of ``module``."""
    import torch.nn as nn
    from ptflops import get_model_complexity_info  # imported here: only profiling needs it

    from nf_core.models.vit import SelfAttention, attention_macs

    model = copy.deepcopy(module)  # ptflops switches to eval mode and leaves attributes behind
    with redirect_stdout(io.StringIO()) as log:  # ptflops reports failures by printing
        macs, _ = get_model_complexity_info(
            model,
            (3, input_size, input_size),
            as_strings=False,
            print_per_layer_stat=False,
            backend="pytorch",
            custom_modules_hooks={nn.ConvTranspose2d: _conv_transpose_macs, SelfAttention: attention_macs},
            backend_specific_config={"count_functional": False},
        )
    if macs is None:
        raise RuntimeError(f"ptflops could not count {type(module).__name__}: {log.getvalue().strip()}")
    # ptflops counts only parameters with requires_grad; a frozen base model has them all the same.
    return sum(p.numel() for p in module.parameters()), int(macs)


def profile_module(module: nn.Module, input_size: int, min_padding: int = 0) -> dict[str, int]:
    """``{"params", "macs", "twma"}`` for any module taking (1, 3, input_size, input_size)
    (``min_padding``: GENERATOR_PADDING for a generator, as the paper counted)."""
    params, macs = count_params_macs(module, input_size)
    return {"params": params, "macs": macs, "twma": twma(module, input_size, min_padding)}


def dataset_shape(dataset: str) -> tuple[int, int]:
    """(num_classes, input_size) of a dataset name."""
    check_choice("dataset", dataset, DATASET_SHAPES)
    return DATASET_SHAPES[dataset]


TABLE_WIDTHS = (1.0, 0.5, 0.25, 0.125)  # widths the shipped counts table holds for every model and dataset shape
COUNTS_TABLE = Path(__file__).with_name("data") / "cost_counts.json"
# What a registered network's counts depend on besides (name, shape, width): its definition and this count.
COUNT_SOURCES = ("cost.py", "generators.py", "ber_conditioned.py", "registry.py", "models")


@functools.cache
def counts_fingerprint() -> str:
    """A hash of COUNT_SOURCES' files and ptflops' version: the shipped table is trusted only while it matches."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    h = hashlib.sha256()
    for rel in COUNT_SOURCES:
        p = here / rel
        for f in sorted(p.glob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(here).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    try:
        h.update(f"ptflops {version('ptflops')}".encode())
    except PackageNotFoundError:
        h.update(b"ptflops missing")
    return h.hexdigest()[:16]


def counts_key(kind: str, name: str, num_classes: int, input_size: int, width: float = 1.0) -> str:
    """The cache key of a registered network's counts (generators: only the input size matters)."""
    if kind == "generator":
        return f"generator/{name}/{input_size}"
    return f"model/{name}/{num_classes}x{input_size}/w{width:g}"


@functools.cache
def _shipped_counts() -> dict[str, dict[str, int]]:
    try:
        data = json.loads(COUNTS_TABLE.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("counts", {}) if data.get("fingerprint") == counts_fingerprint() else {}


@functools.cache
def _count_registered(kind: str, name: str, num_classes: int, input_size: int, width: float) -> tuple:
    import torch

    from nf_core.generators import create_generator
    from nf_core.models import create_model

    with torch.device("meta"):  # shapes only: no allocation, no weight init
        if kind == "model":
            module = create_model(name, num_classes=num_classes, input_size=input_size, width=width)
        else:  # the float architecture: the quantized UNets' ConvT p1 variant has the same weights and count
            module = create_generator(name, input_size=input_size)
    return tuple(profile_module(module, input_size, GENERATOR_PADDING if kind == "generator" else 0).items())


_extra_counts: dict[str, dict[str, int]] = {}  # counted in this process, or loaded from a caller's cache


def registered_counts(kind: str, name: str, num_classes: int, input_size: int, width: float = 1.0) -> dict[str, int]:
    """``{"params", "macs", "twma"}`` of a registered model (at ``width``) or generator: from the
    shipped table or a loaded cache (``load_counts``) when one holds the network, else counted on the
    meta device (once per process; ``extra_counts`` hands such counts to a caller's cache)."""
    if kind == "generator":
        width = 1.0  # generators have no width multiplier
    key = counts_key(kind, name, num_classes, input_size, width)
    hit = _shipped_counts().get(key) or _extra_counts.get(key)
    if hit is None:
        hit = _extra_counts[key] = dict(_count_registered(kind, name, num_classes, input_size, width))
    return dict(hit)


def load_counts(data: dict) -> bool:
    """Use the counts of a cache written from ``extra_counts()`` (e.g. one kept beside a sweep) when its
    fingerprint is current; returns whether it was used."""
    if not isinstance(data, dict) or data.get("fingerprint") != counts_fingerprint():
        return False
    _extra_counts.update({k: dict(v) for k, v in data.get("counts", {}).items() if k not in _extra_counts})
    return True


def extra_counts() -> dict:
    """The counts this process holds beyond the shipped table, with their fingerprint (a cache's content)."""
    return {"fingerprint": counts_fingerprint(), "counts": dict(sorted(_extra_counts.items()))}


def _check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width {width!r} must be > 0 (the channel multiplier; 1 = the paper's networks)")
    return float(width)


def profile_model(name: str, dataset: str, width: float = 1.0) -> dict[str, int]:
    """``{"params", "macs", "twma"}`` of a registered base model built for ``dataset`` at ``width``."""
    check_choice("model", name, catalog.names("models"))  # unknown names fail with the list of valid ones (torch-free)
    num_classes, input_size = dataset_shape(dataset)
    return registered_counts("model", name, num_classes, input_size, _check_width(width))


def profile_generator(name: str, dataset: str) -> dict[str, int]:
    """``{"params", "macs", "twma"}`` of a registered generator at ``dataset``'s input size."""
    check_choice("generator", name, catalog.names("generators"))
    num_classes, input_size = dataset_shape(dataset)
    return registered_counts("generator", name, num_classes, input_size)


def counts_table() -> dict:
    """The shipped table's content, counted afresh: every registered model × dataset shape × TABLE_WIDTHS,
    every generator × input size, and the fingerprint they were counted under."""
    counts: dict[str, dict[str, int]] = {}
    for num_classes, size in sorted(set(DATASET_SHAPES.values())):
        for m in catalog.names("models"):
            for w in TABLE_WIDTHS:
                counts[counts_key("model", m, num_classes, size, w)] = dict(
                    _count_registered("model", m, num_classes, size, w)
                )
        for g in catalog.names("generators"):
            counts[counts_key("generator", g, num_classes, size)] = dict(
                _count_registered("generator", g, num_classes, size, 1.0)
            )
    return {"fingerprint": counts_fingerprint(), "counts": dict(sorted(counts.items()))}


def write_counts_table(path: str | Path = COUNTS_TABLE) -> Path:
    """Write ``counts_table()`` to ``path`` (default: the shipped table)."""
    path, table = Path(path), counts_table()
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table["counts"].items()]  # one network a line
    head = f'{{"fingerprint": {json.dumps(table["fingerprint"])}, "counts": {{\n'
    path.write_text(head + ",\n".join(lines) + "\n}}\n")
    counts_fingerprint.cache_clear()
    _shipped_counts.cache_clear()
    return path


def energy_convention(width: float) -> str:
    """The networks a saving is priced on, printed beside every saving."""
    return "paper full-size networks (width 1)" if width == 1.0 else f"width {width:g} networks"


def energy_saving(twma_base: int, twma_gen: int, energy_ratio: float) -> float:
    """ES in percent: 100 · (1 − (TWMA_base·e_LV + TWMA_gen·e_NV) / (TWMA_base·e_NV)).

    ``energy_ratio`` is e_LV / e_NV; the generator runs at nominal voltage.
    """
    if not twma_base > 0 or twma_gen < 0:
        raise ValueError(f"need base accesses > 0 and generator accesses >= 0; got {twma_base!r}, {twma_gen!r}")
    if not energy_ratio > 0:
        raise ValueError(f"energy_ratio {energy_ratio!r} must be > 0 (per-access energy e_LV / e_NV)")
    return 100.0 * (1.0 - (twma_base * energy_ratio + twma_gen) / twma_base)


def mac_energy_saving(macs_base: int, macs_gen: int, energy_ratio: float) -> float:
    """MAC-ES in percent: the same formula with MACs in place of TWMA (paper's Eq. 7)."""
    return energy_saving(macs_base, macs_gen, energy_ratio)


def network_saving(model: str, generator: str | None, dataset: str, energy_ratio: float, width: float = 1.0) -> float:
    """ES (%) of base ``model`` (built at ``width``) at a voltage with e_LV/e_NV ``energy_ratio``, behind
    ``generator`` at nominal voltage (None: the model alone). The one pricing of `nf profile`, the
    report's energy section and `nf select` (see ``energy_convention``)."""
    base = profile_model(model, dataset, width)["twma"]
    gen = 0 if generator is None else profile_generator(generator, dataset)["twma"]
    return energy_saving(base, gen, energy_ratio)


def profile_pair(
    model: str,
    generator: str,
    dataset: str,
    ber: float | None = None,
    voltage_table: VoltageTable | None = None,
    width: float = 1.0,
) -> dict:
    """``{"model": {...}, "generator": {...}}`` (the model at ``width``), plus ``energy_saving`` and
    ``mac_energy_saving`` (percent) when ``ber`` is given; the energy ratio comes from ``voltage_table``
    (default: shipped)."""
    out: dict = {"model": profile_model(model, dataset, width), "generator": profile_generator(generator, dataset)}
    if ber is not None:
        ratio = (voltage_table or load_voltage_table()).energy_ratio(ber)
        out["energy_saving"] = network_saving(model, generator, dataset, ratio, width)
        out["mac_energy_saving"] = mac_energy_saving(out["model"]["macs"], out["generator"]["macs"], ratio)
    return out


def profile_table(
    dataset: str,
    ber: float | None = None,
    voltage_table: VoltageTable | None = None,
    models: list[str] | None = None,
    generators: list[str] | None = None,
    width: float = 1.0,
) -> list[dict]:
    """One flat row per base model × generator (default: every registered model × the paper's six
    generators; models at ``width``): the paper's Tables 2, 6, 7 and 8 in long form. Energy columns
    are None without ``ber``."""
    table = (voltage_table or load_voltage_table()) if ber is not None else None
    ratio = table.energy_ratio(ber) if table is not None else None
    rows = []
    for m in models or catalog.names("models"):
        for g in generators or PAPER_GENERATORS:
            pair = profile_pair(m, g, dataset, ber, table, width)
            row: dict = {"dataset": dataset, "model": m, "generator": g, "width": width}
            row.update({f"model_{k}": v for k, v in pair["model"].items()})
            row.update({f"generator_{k}": v for k, v in pair["generator"].items()})
            row.update(
                ber=ber,
                energy_ratio=ratio,
                energy_saving=pair.get("energy_saving"),
                mac_energy_saving=pair.get("mac_energy_saving"),
            )
            rows.append(row)
    return rows


__all__ = [
    "ARRAY_ROWS",
    "READS_PER_ACCESS",
    "GENERATOR_PADDING",
    "DATASET_SHAPES",
    "Layer",
    "layer_filter_reads",
    "scalesim_layers",
    "twma",
    "count_params_macs",
    "profile_module",
    "dataset_shape",
    "profile_model",
    "profile_generator",
    "registered_counts",
    "load_counts",
    "extra_counts",
    "counts_table",
    "write_counts_table",
    "energy_convention",
    "network_saving",
    "energy_saving",
    "mac_energy_saving",
    "profile_pair",
    "profile_table",
    "load_voltage_table",
]


if __name__ == "__main__":  # python -m nf_core.cost: regenerate the shipped counts table
    print(f"wrote {write_counts_table()}")
