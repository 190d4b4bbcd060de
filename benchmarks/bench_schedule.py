"""The paper's whole programme (every sweep in sweeps/ but the cluster smoke test) simulated on 8 GPUs:
makespan and GPU-busy fraction with and without stage barriers (orchestration/cluster/schedule.py).

    python benchmarks/bench_schedule.py

Durations are assumptions, not measurements (no GPU here), taken from the paper's own report
(App., "Computing Resources": 150 generator epochs on a V100 take 17/50/9/13/15 h for ResNet18/
ResNet50/VGG11/VGG16/VGG19 on CIFAR-10 and CIFAR-100, 9/27/5/7/8 h on GTSRB, 32/54/50/90/102 h on
ImageNet-10), each trial taking that long at its own resource share (resources.gpus):
- generator epoch = paper hours / 150 (an ensemble generator: the sum over its source models);
- base epoch = a sixth of the generator epoch (one pass where EOPM makes N + 1 = 6);
- eval / transfer trial = 2 x (1 + chips) passes over the test set per evaluation BER, bit width and
  target, a test-set pass being a base epoch x (test / train images) / 3 (forward only).
Node start-up, data download and scheduling latency are not counted.
"""

from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestration.cluster.capacity import tasks_from_plan
from orchestration.cluster.schedule import Node, compare  # noqa: E402
from orchestration.spec.config import STAGES, ConfigError, load_config  # noqa: E402
from orchestration.spec.plan import Item, plan  # noqa: E402

HOURS_150 = {  # the paper's generator training hours (150 epochs, V100)
    "cifar10": {"resnet18": 17, "resnet50": 50, "vgg11": 9, "vgg16": 13, "vgg19": 15},
    "gtsrb": {"resnet18": 9, "resnet50": 27, "vgg11": 5, "vgg16": 7, "vgg19": 8},
    "imagenet10": {"resnet18": 32, "resnet50": 54, "vgg11": 50, "vgg16": 90, "vgg19": 102},
}
HOURS_150["cifar100"] = HOURS_150["cifar10"]
TEST_OVER_TRAIN = {
    "cifar10": 10000 / 50000,
    "cifar100": 10000 / 50000,
    "gtsrb": 12630 / 26640,
    "imagenet10": 500 / 13000,
}
SKIP = {"smoke"}  # a cluster smoke test, not part of the paper's programme


def seconds_per_epoch(cfg, item: Item) -> float:
    """Seconds per epoch (eval/transfer: per trial) of one item, from the assumptions above."""
    p = item.params
    gen_epoch = sum(HOURS_150[p["dataset"]][m] for m in p.get("source", [p.get("model")])) * 3600 / 150
    if item.stage == "generator":
        return gen_epoch
    base_epoch = gen_epoch / 6
    if item.stage == "base":
        return base_epoch
    e = cfg.evaluation
    test_pass = sum(HOURS_150[p["dataset"]][m] * 3600 / 150 / 6 for m in p["targets"]) / 3
    return 2 * (1 + e.chips) * len(e.bers) * len(e.bits or [p["bits"]]) * test_pass * TEST_OVER_TRAIN[p["dataset"]]


def programme() -> tuple[list, list[str], list[str]]:
    tasks, names, skipped = [], [], []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "sweeps", "*.yaml"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name in SKIP:
            continue
        try:
            cfg = load_config(path)
        except ConfigError as e:
            skipped.append(f"{name} ({str(e).splitlines()[0][:80]})")
            continue
        tasks += tasks_from_plan(cfg, plan(cfg), dict.fromkeys(STAGES, 1.0), lambda it, c=cfg: seconds_per_epoch(c, it))
        names.append(name)
    return tasks, names, skipped


def main() -> None:
    tasks, names, skipped = programme()
    gpu_h = sum(t.seconds * t.gpus for t in tasks) / 3600
    print(f"programme: {len(names)} sweeps, {len(tasks)} trials, {gpu_h:,.0f} GPU-hours (paper's V100 times)")
    print(f"  sweeps: {', '.join(names)}")
    for s in skipped:
        print(f"  skipped (config does not parse in this tree): {s}")
    clusters = {
        "one 8-GPU node (g5.48xlarge: 8 GPU, 192 CPU)": [Node(8, 192, "gpu8")],
        "8 x 1-GPU nodes (g5.2xlarge: 1 GPU, 8 CPU; clusters/aws.yaml's gpu1)": [Node(1, 8, "gpu1")] * 8,
    }
    for label, nodes in clusters.items():
        print(f"\n{label}:")
        print(f"  {'schedule':<26} {'makespan':>14} {'GPU busy':>9}")
        runs = compare(tasks, nodes, STAGES)
        for name, r in runs.items():
            h = r["makespan_hours"]
            print(f"  {name:<26} {h:>8,.0f} h ({h / 24:>4.1f} d) {100 * r['gpu_busy']:>7.1f}%")
        h = {k: r["makespan_hours"] for k, r in runs.items()}
        old = h["barriers, sweeps in turn"]  # the previous runner, one sweep after another
        print(
            f"  all sweeps at once without barriers vs in turn with them: {old / h['no barriers']:.2f}x shorter;"
            f" in turn, no barriers alone: {old / h['no barriers, sweeps in turn']:.2f}x"
        )
    print("\neach sweep alone on the 8-GPU node (makespan h / GPU busy):")
    print(f"  {'sweep':<30} {'no barriers':>18} {'barriers':>18}")
    node = [Node(8, 192, "gpu8")]
    for name in names:
        r = compare([t for t in tasks if t.group == name], node, STAGES)
        a, b = r["no barriers"], r["barriers"]
        print(
            f"  {name:<30} {a['makespan_hours']:>10,.0f} h {100 * a['gpu_busy']:>4.0f}%"
            f" {b['makespan_hours']:>10,.0f} h {100 * b['gpu_busy']:>4.0f}%"
        )
    print(
        "\nno barriers: one Tune run per sweep, each item once the items it needs are done (nf sweep run);"
        "\nbarriers: one Tune run per stage (the previous runner), the sweeps' drivers side by side or in turn."
    )


if __name__ == "__main__":
    main()
