"""What `nf sweep plan` and `nf sweep status` print: plans, capacity estimates and stage states as tables."""

from __future__ import annotations

from typing import Any

from orchestration.spec.config import STAGES, SweepConfig
from orchestration.spec.plan import Item
from orchestration.tables import indent, table


def format_plan(cfg: SweepConfig, items: dict[str, list[Item]], verbose: bool = False) -> str:
    """Trials per stage; with ``verbose`` every trial's id under its stage."""
    rows = [[stage, len(items[stage])] for stage in STAGES]
    rows.append(["total", sum(len(v) for v in items.values())])
    lines = [f"sweep {cfg.name!r}: storage {cfg.storage}"] + reproduces_line(cfg)
    lines.append(indent(table(["stage", "trials"], rows, ["left", "right"])))
    if verbose:
        for stage in STAGES:
            lines.append(f"  {stage}:")
            lines += [f"      {it.id}" for it in items[stage]]
    return "\n".join(lines)


def reproduces_line(cfg: SweepConfig) -> list[str]:
    """The paper tables/figures the config names (its ``reproduces`` field): one line, or none."""
    return [f"  reproduces: {', '.join(cfg.reproduces)}"] if cfg.reproduces else []


def format_status(cfg: SweepConfig, states: dict[str, dict[str, str]], where: str | None = None) -> str:
    """Per stage: how many items are done, running, pending, failed (``where``: the storage read)."""
    kinds = ("done", "running", "pending", "failed")
    rows = [[stage, *(list(states[stage].values()).count(k) for k in kinds)] for stage in STAGES]
    rows.append(["total", *(sum(r[i + 1] for r in rows) for i in range(len(kinds)))])
    head = f"sweep {cfg.name!r} ({where or cfg.storage})\n"
    return head + indent(table(["stage", *kinds], rows, ["left"] + ["right"] * 4))


def _h(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _g(v: float | None) -> str:
    return "?" if v is None else f"{v:g}"


def format_estimate(est: dict[str, Any]) -> str:
    """A capacity estimate (orchestration.cluster.capacity.estimate) as `nf sweep plan --cluster` prints it."""
    c = est["cluster"]
    lines = [f"sweep {est['sweep']!r}" + (f" on cluster {c['name']!r} ({c['path']})" if c else "")]
    if c:
        types = [
            [t["name"], "head" if t["is_head"] else f"up to {t['max_nodes']}", _g(t["cpus"]), _g(t["gpus"])]
            for t in c["node_types"]
        ]
        lines.append(indent(table(["node type", "nodes", "CPU", "GPU"], types, ["left", "right", "right", "right"])))
        lines.append(f"  (at most {c['max_workers']} worker nodes in all)")
    head = ["stage", "trials", "epochs", "CPU/GPU per trial", "GPU-h"]
    align = ["left", "right", "right", "right", "right"]
    if c:
        head += ["parallel/max", "waves", "wall-h", "nodes"]
        align += ["right", "right", "right", "left"]
    rows = []
    for stage, r in est["stages"].items():
        row = [
            stage,
            r["trials"],
            r["epochs"],
            f"{r['cpus_per_trial']:g} / {r['gpus_per_trial']:g}",
            _h(r["gpu_hours"]),
        ]
        if c:
            nodes = ", ".join(f"{k} x{v}" for k, v in r["nodes"].items()) or "-"
            waves = "-" if r["waves"] is None else str(r["waves"])
            row += [f"{r['concurrent']}/{r['capacity']}", waves, _h(r["wall_hours"]), nodes]
        rows.append(row)
    t = est["total"]
    rows.append(["total", t["trials"], "", "", _h(t["gpu_hours"])] + (["", "", _h(t["wall_hours"]), ""] if c else []))
    lines.append(indent(table(head, rows, align)))
    lines += [f"  note: {n}" for n in est["notes"]]
    if c:
        lines.append("  (waves and wall-h: each stage on its own; node start-up and dataset download not counted)")
    sim = est.get("schedule")
    if sim:
        nodes = ", ".join(f"{k} x{v}" for k, v in sim["nodes"].items())
        lines.append(f"  simulated on the cluster at full size ({nodes}; {sim['gpus']:g} GPUs):")
        rows = [
            [name, _h(r["makespan_hours"]), "-" if r["gpu_busy"] is None else f"{100 * r['gpu_busy']:.0f}%"]
            for name, r in sim["runs"].items()
        ]
        lines.append(indent(table(["schedule", "makespan-h", "GPU busy"], rows, ["left", "right", "right"]), "    "))
        lines.append("    (no barriers: an item starts once the items it needs are done, as `nf sweep run` does;")
        lines.append("     barriers: every item of a stage waits for the whole stage before it)")
        if sim.get("max_concurrent_ignored"):
            lines.append("    note: resources.max_concurrent is not simulated")
    elif c and any(r["epoch_seconds"] for r in est["stages"].values()):
        lines.append(
            "  (no makespan simulation: it needs --epoch-seconds for every stage with trials and nodes that fit them)"
        )
    return "\n".join(lines)


_METRICS = (("loss", "loss {:.4g}"), ("train_acc", "acc {:.1f}%"), ("test_ca", "CA {:.1f}%"))
_METRICS += (("pa_nf_mean", "PA (NF) {:.1f}%"), ("rp", "RP {:+.2f}"))


def _metric_text(m: dict[str, float] | None) -> str:
    return ", ".join(fmt.format(m[k]) for k, fmt in _METRICS if k in m) if m else "-"


def _ago(t: float | None, now: float) -> str:
    """An age as a person reads it: 40s, 12m, 3.5h, 2.1d ago."""
    if not t:
        return "-"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago" if s < 172800 else f"{s / 86400:.1f}d ago"


def _short(text: str | None, width: int | None) -> str:
    """The first line of an error message, cut to ``width`` characters."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if width is None or len(line) <= width else line[: width - 3] + "..."


def format_items(statuses: list[Any], failed_only: bool = False, now: float | None = None) -> str:
    """One line per item (``orchestration.sweep.status.ItemStatus``): stage, id, state, epoch k/of, last
    loss or accuracy, attempts, last update and, for a failed item, its error. ``failed_only``:
    only the failed items, with their whole error line."""
    import time

    now = time.time() if now is None else now
    rows = []
    for st in statuses:
        if failed_only and st.state != "failed":
            continue
        epoch = "-" if st.epoch is None else f"{st.epoch}/{st.epochs}"
        error = _short(st.error, None if failed_only else 100) if st.state == "failed" else ""
        rows.append(
            [
                st.stage,
                st.id,
                st.state,
                epoch,
                _metric_text(st.metrics),
                st.attempts or "-",
                _ago(st.updated, now),
                error,
            ]
        )
    if not rows:
        return "  no failed items" if failed_only else "  no items"
    head = ["stage", "item", "state", "epoch", "last metrics", "attempts", "updated", "error"]
    return indent(table(head, rows, ["left", "left", "left", "right", "left", "right", "right", "left"]))


def format_sweep_list(root: str, rows: list[dict[str, Any]], now: float | None = None) -> str:
    """`nf sweep list`: each sweep under a storage root with its progress."""
    import time

    now = time.time() if now is None else now
    if not rows:
        return f"no sweeps under {root}"
    out = []
    for r in rows:
        if r["total"] is None:
            out.append([r["name"], "?", "", "", "", "", "-", r["error"] or ""])
            continue
        pct = 100.0 * r["done"] / r["total"] if r["total"] else 100.0
        out.append(
            [
                r["name"],
                f"{r['done']}/{r['total']}",
                f"{pct:.0f}%",
                r["running"],
                r["failed"],
                r["pending"],
                _ago(r["updated"], now),
                r["error"] or "",
            ]
        )
    head = ["sweep", "done/total", "", "running", "failed", "pending", "last update", ""]
    align = ["left", "right", "right", "right", "right", "right", "right", "left"]
    return f"sweeps under {root}\n" + indent(table(head, out, align))
