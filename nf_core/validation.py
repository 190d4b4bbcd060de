"""Up-front argument checks: fail before any compute, naming the bad value and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable

FAULT_MODELS = ("stuck_at", "flip")
LAYOUTS = ("wrap", "flat", "reference")
MIN_BITS, MAX_BITS = 2, 8
PAPER_GENERATORS = ("ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS")  # the paper's six (Table 4/5)
MEASURED = "measured"  # evaluation on measured fault maps (nf_core.fault_maps) instead of a fault model


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")


def check_ber(ber: float) -> float:
    if not isinstance(ber, (int, float)) or not 0.0 <= float(ber) <= 1.0:
        raise ValueError(f"BER {ber!r} is outside [0, 1] (it is the fraction of faulty cells, e.g. 0.01 for 1%)")
    return float(ber)


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits {bits!r} is outside {MIN_BITS}..{MAX_BITS} (weight precision in bits)")
    return bits


def check_n_chips(n: int) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"N {n!r} must be an integer >= 1 (number of perturbed models per batch)")
    return n


def check_lambda(lam: float) -> float:
    if not isinstance(lam, (int, float)) or lam < 0:
        raise ValueError(f"lambda {lam!r} must be >= 0 (weight of the perturbed-model loss)")
    return float(lam)


def check_fault_model(name: str) -> str:
    check_choice("fault model", name, FAULT_MODELS)
    return name


def check_layout(name: str) -> str:
    check_choice("memory layout", name, LAYOUTS)
    return name
