"""The registered names (models, generators, datasets, fault models …) without importing torch.

The sweep config validates against these before any compute starts, on machines (a laptop
planning a sweep, the CLI's first second) where importing torch would be slow or absent.
The real registries live beside their constructors; tests/test_config_schema.py asserts that
every tuple here equals the registry it mirrors, so registering a new name means adding it
here too.
"""

from __future__ import annotations

MODELS = ("resnet18", "resnet50", "vgg11", "vgg16", "vgg19", "vit", "preact_resnet18")  # nf_core.models.MODELS
PAPER_GENERATORS = ("ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS")  # nf_core.generators
BER_SUFFIX = "_BER"  # nf_core.ber_conditioned.SUFFIX: BER-conditioned variants of the paper's generators
# nf_core.generators.GENERATORS (the *_BER ones register in nf_core/ber_conditioned.py)
GENERATORS = (*PAPER_GENERATORS, "UIP", *(g + BER_SUFFIX for g in PAPER_GENERATORS))
DATASETS = ("cifar10", "cifar100", "gtsrb", "imagenet10", "digits")  # nf_core.data.DATASETS
FAULT_MODELS = ("stuck_at", "flip")  # nf_core.validation.FAULT_MODELS
MEASURED = "measured"  # nf_core.fault_maps: evaluation on measured fault maps (evaluate_measured's fault_model)
LAYOUTS = ("wrap", "flat", "reference")  # nf_core.validation.LAYOUTS
MIN_BITS, MAX_BITS = 2, 8  # nf_core.validation: weight precisions the quantizer supports
OPTIMIZERS = ("sgd", "adam")  # nf_core.train.OPTIMIZERS
SCHEDULES = ("none", "cosine")  # nf_core.train.SCHEDULES
BATCHING = ("vmap", "loop")  # nf_core.deployed.BATCHING
AMP = ("bf16",)  # nf_core.deployed.AMP, less None (fp32)


def is_ber_conditioned(generator: str) -> bool:
    """A generator name of a BER-conditioned variant (trained over a range of BERs)."""
    return generator.endswith(BER_SUFFIX)
