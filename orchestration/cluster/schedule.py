"""Simulated makespan of a sweep (or a whole programme of sweeps) on a cluster, with and without stage barriers.

Pure Python, no Ray: `nf sweep plan --cluster X --epoch-seconds ...` and
benchmarks/bench_schedule.py use it to show what the dependency-driven runner buys.

The model: every item is a task of ``epochs x epoch_seconds`` (eval/transfer: one pass) that
needs its trial's CPUs and GPUs on ONE node (Tune packs a trial's bundles on one node) and
may start once the items it needs (orchestration.spec.plan.dependencies) have ended. List
scheduling: whenever a task ends, the ready tasks are placed in priority order (the longest
remaining path to the end of the DAG first, ties in plan order) on the first node with room;
a task that does not fit waits and smaller ready tasks behind it go ahead (Ray places any
trial that fits). "With barriers" adds, per sweep, an edge from every item of a stage to
every item of the next stage (the previous runner: one Tune run per stage). Node start-up,
dataset download and scheduling latency are not counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

_EPS = 1e-9


@dataclass(frozen=True)
class Task:
    """One item to simulate: its duration, its resources on one node, what it waits for."""

    id: str
    seconds: float
    gpus: float = 0.0
    cpus: float = 0.0
    needs: tuple[str, ...] = ()
    stage: str = ""
    group: str = ""  # barriers apply within a group (one sweep)


@dataclass(frozen=True)
class Node:
    """A machine's capacity; ``cpus=None``: CPUs are not a limit."""

    gpus: float
    cpus: float | None = None
    name: str = "node"


@dataclass
class Schedule:
    """A simulated run: each task's start, end and node index."""

    start: dict[str, float]
    end: dict[str, float]
    node: dict[str, int]
    makespan: float
    gpu_seconds: float  # sum over tasks of seconds x GPUs
    gpus_total: float
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # first start, last end

    @property
    def gpu_busy(self) -> float | None:
        """Fraction of the cluster's GPU-seconds over the makespan that trials hold."""
        if self.makespan <= 0 or self.gpus_total <= 0:
            return None
        return self.gpu_seconds / (self.makespan * self.gpus_total)


def _check(tasks: Sequence[Task]) -> dict[str, Task]:
    by_id: dict[str, Task] = {}
    for t in tasks:
        if t.id in by_id:
            raise ValueError(f"task id {t.id!r} appears twice")
        by_id[t.id] = t
    for t in tasks:
        missing = [n for n in t.needs if n not in by_id]
        if missing:
            raise ValueError(f"task {t.id!r} needs {', '.join(missing)}, which is not a task")
    return by_id


def ranks(tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's longest path to the end of the DAG, its own seconds included (its priority)."""
    by_id = _check(tasks)
    users: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.id)
    out: dict[str, float] = {}
    for t in reversed(_topological(tasks, by_id)):
        out[t] = by_id[t].seconds + max((out[u] for u in users[t]), default=0.0)
    return out


def _topological(tasks: Sequence[Task], by_id: dict[str, Task]) -> list[str]:
    indeg = {t.id: len(set(t.needs)) for t in tasks}
    users: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for n in set(t.needs):
            users[n].append(t.id)
    order, todo = [], [t.id for t in tasks if indeg[t.id] == 0]
    while todo:
        i = todo.pop()
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                todo.append(u)
    if len(order) != len(tasks):
        cyclic = sorted(i for i, d in indeg.items() if d > 0)
        raise ValueError(f"dependency cycle among: {', '.join(cyclic[:5])}")
    return order


def _fits(node: Node, free_gpu: float, free_cpu: float | None, t: Task) -> bool:
    return t.gpus <= free_gpu + _EPS and (free_cpu is None or t.cpus <= free_cpu + _EPS)


def simulate(tasks: Sequence[Task], nodes: Sequence[Node]) -> Schedule:
    """List-schedule ``tasks`` on ``nodes`` (see the module docstring); ValueError if a task fits no node."""
    by_id = _check(tasks)
    for t in tasks:
        if not any(t.gpus <= n.gpus + _EPS and (n.cpus is None or t.cpus <= n.cpus + _EPS) for n in nodes):
            raise ValueError(f"task {t.id!r} ({t.cpus:g} CPU, {t.gpus:g} GPU) fits no node of the cluster")
    prio = ranks(tasks)
    order = {t.id: i for i, t in enumerate(tasks)}
    key = lambda i: (-prio[i], order[i])  # noqa: E731
    waiting = {t.id: len(set(t.needs)) for t in tasks}
    users: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for n in set(t.needs):
            users[n].append(t.id)
    free_gpu = [n.gpus for n in nodes]
    free_cpu = [n.cpus for n in nodes]
    ready = sorted((i for i, w in waiting.items() if w == 0), key=key)
    running: list[tuple[float, int, str]] = []  # (end, order, id)
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    where: dict[str, int] = {}
    now = 0.0
    while ready or running:
        still = []
        for i in ready:
            t = by_id[i]
            k = next((k for k, n in enumerate(nodes) if _fits(n, free_gpu[k], free_cpu[k], t)), None)
            if k is None:
                still.append(i)
                continue
            free_gpu[k] -= t.gpus
            if free_cpu[k] is not None:
                free_cpu[k] -= t.cpus
            start[i], where[i] = now, k
            heapq.heappush(running, (now + t.seconds, order[i], i))
        ready = still
        if not running:  # cannot happen: every task fits an empty node
            raise RuntimeError(f"nothing can run: {', '.join(ready[:5])}")
        now, _, i = heapq.heappop(running)
        done = [i]
        while running and running[0][0] <= now + _EPS:  # every task ending at this instant
            done.append(heapq.heappop(running)[2])
        for i in done:
            t, k = by_id[i], where[i]
            end[i] = now
            free_gpu[k] += t.gpus
            if free_cpu[k] is not None:
                free_cpu[k] += t.cpus
            for u in users[i]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    ready.append(u)
        ready.sort(key=key)
    stages: dict[str, tuple[float, float]] = {}
    for t in tasks:
        if t.stage:
            a, b = stages.get(t.stage, (start[t.id], end[t.id]))
            stages[t.stage] = (min(a, start[t.id]), max(b, end[t.id]))
    return Schedule(
        start=start,
        end=end,
        node=where,
        makespan=max(end.values(), default=0.0),
        gpu_seconds=sum(t.seconds * t.gpus for t in tasks),
        gpus_total=sum(n.gpus for n in nodes),
        stages=stages,
    )


def with_barriers(
    tasks: Sequence[Task], stages: Sequence[str], sequential_groups: bool = False, stage_barriers: bool = True
) -> list[Task]:
    """The same tasks with stage barriers: within each group, every task of a stage waits for every
    task of the stages before it (through one zero-cost barrier task per stage, not n x m edges).
    ``sequential_groups``: each group also waits for the whole previous group (sweeps run one after
    another); with ``stage_barriers=False`` that is the only barrier added."""
    groups: dict[str, dict[str, list[Task]]] = {}
    for t in tasks:
        groups.setdefault(t.group, {}).setdefault(t.stage, []).append(t)
    extra: dict[str, list[str]] = {}
    barriers: list[Task] = []
    previous_group_end: list[str] = []
    for g, by_stage in groups.items():
        before: list[str] = list(previous_group_end) if sequential_groups else []
        layers = [(s, by_stage.get(s, [])) for s in stages]
        if not stage_barriers:
            layers = [("all", [t for members in by_stage.values() for t in members])]
        for s, members in layers:
            if not members:
                continue
            if before:
                b = Task(f"{g}|barrier|{s}", 0.0, needs=tuple(before), group=g)
                barriers.append(b)
                for t in members:
                    extra[t.id] = [b.id]
            before = [t.id for t in members]
        previous_group_end = before
    out = [replace(t, needs=(*t.needs, *extra.get(t.id, ()))) for t in tasks]
    return out + barriers


def compare(tasks: Sequence[Task], nodes: Sequence[Node], stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Makespan (hours) and GPU-busy fraction without and with barriers (sweeps side by side), and,
    when there are several sweeps, both again with the sweeps run one after another."""
    runs = {"no barriers": list(tasks), "barriers": with_barriers(tasks, stages)}
    if len({t.group for t in tasks}) > 1:
        runs["no barriers, sweeps in turn"] = with_barriers(tasks, stages, True, stage_barriers=False)
        runs["barriers, sweeps in turn"] = with_barriers(tasks, stages, sequential_groups=True)
    out = {}
    for name, ts in runs.items():
        s = simulate(ts, nodes)
        out[name] = {
            "makespan_hours": s.makespan / 3600,
            "gpu_busy": s.gpu_busy,
            "stage_hours": {k: ((a / 3600), (b / 3600)) for k, (a, b) in s.stages.items()},
        }
    return out
