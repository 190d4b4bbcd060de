"""Deployable NeuralFuse: a trained generator (optionally with its quantized base model) as one graph.

The graph computes what was evaluated: the generator with the b-bit weights it was trained and
evaluated with (`nf_core.eopm.deployed_generator`), x' = clamp(x + G(x), -1, 1) included; the
base model (optional) with its clean stored weights Ŵ = q · scale (nominal voltage — on an
accelerator the chip's own faults then act on these weights).

ONNX export uses torch's default exporter (``torch.onnx.export(dynamo=True)``, torch.export
based; it needs the ``onnx`` and ``onnxscript`` packages). The TorchScript exporter
(``dynamo=False``) is deprecated since torch 2.9, so it is not used. The batch axis is dynamic.
onnx, onnxscript and onnxruntime are imported only when a function here runs (extra ``export``).
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch
import torch.nn as nn

from nf_core.quant import quantize_model
from nf_core.transform import neuralfuse

INPUT, OUTPUT_X, OUTPUT_LOGITS = "x", "x_transformed", "logits"


class NeuralFuseInput(nn.Module):
    """x → x' = clamp(x + G(x), -1, 1): what the base model receives."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return neuralfuse(x, self.generator)


class NeuralFuseClassifier(nn.Module):
    """x → f(x'): the generator and the quantized base model as one graph (logits)."""

    def __init__(self, generator: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.transform = NeuralFuseInput(generator)
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.transform(x))


def quantized_base(model: nn.Module, bits: int = 8) -> nn.Module:
    """A frozen eval-mode copy of ``model`` whose Conv/Linear weights are its stored b-bit values Ŵ."""
    out = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    with torch.no_grad():
        for name, w in quantize_model(out, bits).dequantized().items():
            out.get_parameter(name).copy_(w)
    return out


def deployable(deployed_generator: nn.Module, base: nn.Module | None = None, bits: int = 8) -> nn.Module:
    """The module to export: x → x' (no base), or x → logits of the ``bits``-bit ``base`` on x'.

    ``deployed_generator`` is the generator as evaluated (`nf_core.eopm.deployed_generator`).
    """
    gen = copy.deepcopy(deployed_generator).cpu().eval().requires_grad_(False)
    if base is None:
        return NeuralFuseInput(gen).eval()
    return NeuralFuseClassifier(gen, quantized_base(base, bits)).eval()


def export_onnx(module: nn.Module, path: str | os.PathLike, input_size: int, opset: int | None = None) -> str:
    """Write ``module`` (input (B, 3, S, S) in [-1, 1], B dynamic) to one self-contained ONNX file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out = OUTPUT_LOGITS if isinstance(module, NeuralFuseClassifier) else OUTPUT_X
    example = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on its own internals, not ours to fix
        torch.onnx.export(
            module.eval(),
            (example,),
            path,
            input_names=[INPUT],
            output_names=[out],
            opset_version=opset,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,  # weights inside the one file: a generator is small
            verbose=False,
        )
    return path


def onnx_outputs(path: str | os.PathLike, x: torch.Tensor) -> np.ndarray:
    """The ONNX graph's output on ``x``, run with onnxruntime on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32)})[0]


def max_abs_difference(module: nn.Module, path: str | os.PathLike, x: torch.Tensor) -> float:
    """max |ONNX(x) − PyTorch(x)| over every output element: the export's check."""
    with torch.no_grad():
        ref = module.eval()(x.cpu()).numpy()
    got = onnx_outputs(path, x)
    if got.shape != ref.shape:
        raise ValueError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.abs(got - ref).max())


def check_inputs(input_size: int, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Deterministic inputs in [-1, 1] (the images' range) for checking an export."""
    return torch.rand(n, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
