"""The schedule simulator on hand-made DAGs, the plan's dependencies, and the runner's searcher (no Ray run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.cluster.capacity import simulate_plan
from orchestration.cluster.schedule import Node, Task, compare, ranks, simulate, with_barriers
from orchestration.spec.config import STAGES, parse_config
from orchestration.spec.plan import blocked_by, dependencies, plan
from tests.sweep_support import TINY

REPO = Path(__file__).resolve().parents[1]


def _dag() -> list[Task]:
    """Three base models (one slow), one generator each; 1 GPU per task."""
    return [
        Task("A", 10, 1, stage="base"),
        Task("B", 2, 1, stage="base"),
        Task("C", 2, 1, stage="base"),
        Task("GA", 1, 1, needs=("A",), stage="generator"),
        Task("GB", 8, 1, needs=("B",), stage="generator"),
        Task("GC", 8, 1, needs=("C",), stage="generator"),
    ]


def test_list_schedule_by_hand() -> None:
    # Worked by hand on 2 GPUs. Ranks (longest path to the end): A 11, B 10, C 10, GB 8, GC 8, GA 1.
    # t=0 A, B | t=2 B ends: C | t=4 C ends: GB | t=10 A ends: GC (rank 8 before GA's 1) | t=12 GB ends: GA.
    s = simulate(_dag(), [Node(gpus=2)])
    assert ranks(_dag()) == {"A": 11, "B": 10, "C": 10, "GA": 1, "GB": 8, "GC": 8}
    assert s.start == {"A": 0, "B": 0, "C": 2, "GB": 4, "GC": 10, "GA": 12}
    assert s.makespan == 18 and s.gpu_seconds == 31
    assert s.gpu_busy == pytest.approx(31 / 36)
    assert s.stages == {"base": (0, 10), "generator": (4, 18)}
    # With a barrier no generator starts before the slow base model ends at t=10: GB, GC 10-18, GA 18-19.
    b = simulate(with_barriers(_dag(), STAGES), [Node(gpus=2)])
    assert b.start["GB"] == b.start["GC"] == 10 and b.start["GA"] == 18
    assert b.makespan == 19 and b.gpu_busy == pytest.approx(31 / 38)
    assert b.stages["generator"] == (10, 19)


def test_nodes_cpus_and_fractions() -> None:
    # Half-GPU tasks: four at once on 2 GPUs, but the node's 5 CPUs hold only two 2-CPU tasks.
    tasks = [Task(f"t{i}", 4, 0.5, 2) for i in range(4)]
    assert simulate(tasks, [Node(gpus=2)]).makespan == 4
    assert simulate(tasks, [Node(gpus=2, cpus=5)]).makespan == 8
    # A trial never spans nodes: a 2-GPU task waits for one node with two free GPUs.
    mixed = [Task("one", 3, 1), Task("two", 1, 2)]
    s = simulate(mixed, [Node(gpus=1), Node(gpus=2)])
    assert s.node == {"one": 0, "two": 1} and s.makespan == 3
    with pytest.raises(ValueError, match="'big'.*fits no node"):
        simulate([Task("big", 1, 4)], [Node(gpus=2), Node(gpus=2)])
    with pytest.raises(ValueError, match="cycle"):
        simulate([Task("x", 1, needs=("y",)), Task("y", 1, needs=("x",))], [Node(1)])
    with pytest.raises(ValueError, match="'x' needs nope"):
        simulate([Task("x", 1, needs=("nope",))], [Node(1)])


def test_barriers_per_group_and_in_turn() -> None:
    # Two sweeps of one 5 s base + one 1 s generator each, on 2 GPUs.
    tasks = [
        Task("s1/b", 5, 1, stage="base", group="s1"),
        Task("s1/g", 1, 1, needs=("s1/b",), stage="generator", group="s1"),
        Task("s2/b", 5, 1, stage="base", group="s2"),
        Task("s2/g", 1, 1, needs=("s2/b",), stage="generator", group="s2"),
    ]
    out = compare(tasks, [Node(gpus=2)], STAGES)
    # side by side: both bases 0-5, both generators 5-6; in turn: s1 0-6, then s2 6-12
    assert out["no barriers"]["makespan_hours"] * 3600 == pytest.approx(6)
    assert out["barriers"]["makespan_hours"] * 3600 == pytest.approx(6)
    assert out["barriers, sweeps in turn"]["makespan_hours"] * 3600 == pytest.approx(12)
    assert out["barriers, sweeps in turn"]["gpu_busy"] == pytest.approx(12 / 24)
    assert out["no barriers, sweeps in turn"]["makespan_hours"] * 3600 == pytest.approx(12)
    # One slow base model per sweep: in turn, barriers hold the fast model's generator back.
    tasks = [
        *tasks,
        Task("s1/b2", 2, 1, stage="base", group="s1"),
        Task("s1/g2", 3, 1, needs=("s1/b2",), stage="generator", group="s1"),
    ]
    out = compare(tasks, [Node(gpus=2)], STAGES)
    # In turn without barriers: s1's b 0-5, b2 0-2, g2 2-5, g 5-6; s2 6-12.
    # With barriers g2 waits for b: s1 ends at 5 + 3 = 8; s2 8-14.
    assert out["no barriers, sweeps in turn"]["makespan_hours"] * 3600 == pytest.approx(12)
    assert out["barriers, sweeps in turn"]["makespan_hours"] * 3600 == pytest.approx(14)


def test_dependencies_of_the_plan() -> None:
    cfg = parse_config({**TINY, "storage": "unused", "seeds": [0, 1]})
    items = plan(cfg)
    deps = dependencies(items)
    assert set(deps) == {it.id for s in STAGES for it in items[s]}
    assert all(deps[it.id] == [] for it in items["base"])
    for g in items["generator"]:  # its source base model, same dataset / bits / seed
        p = g.params
        assert deps[g.id] == [f"digits.{m}.b8.s{p['seed']}" for m in p["source"]]
    for e in items["eval"]:
        gid = e.id.removeprefix("eval.")
        assert deps[e.id][0] == gid and set(deps[e.id][1:]) == set(deps[gid])
    for t in items["transfer"]:
        gid = t.id.removeprefix("transfer.")
        seed = t.params["seed"]
        assert deps[t.id] == [gid, *[f"digits.{m}.b8.s{seed}" for m in t.params["targets"]]]
        assert t.params["targets"] == [m for m in cfg.models if m not in t.params["source"]]
    # A failed base model blocks everything downstream of it, and nothing else.
    failed = "digits.resnet18.b8.s0"
    blocked = blocked_by(deps, {failed})
    users = {i for i, n in deps.items() if failed in n}
    assert users <= blocked and failed not in blocked
    assert all(any(n in blocked or n == failed for n in deps[i]) for i in blocked)
    assert not any(i.endswith(".s1") for i in blocked)  # the other seed goes on
    # transfer of a vgg11 generator reads the resnet18 base model: blocked too
    assert any(i.startswith("transfer.digits.vgg11") and i.endswith("s0") for i in blocked)


def test_dependencies_reject_a_missing_need() -> None:
    cfg = parse_config({**TINY, "storage": "unused"})
    items = plan(cfg)
    items["base"] = items["base"][1:]
    with pytest.raises(ValueError, match="needs digits.resnet18.b8.s0, which the plan does not hold"):
        dependencies(items)


def test_simulate_plan_on_a_cluster_file() -> None:
    from orchestration.cluster.clusterfile import read_cluster

    cfg = parse_config({**TINY, "storage": "unused", "resources": {"cpus": 3, "gpus": 0.5}})
    out = simulate_plan(
        cfg,
        plan(cfg),
        read_cluster(str(REPO / "clusters" / "aws.yaml")),
        {"base": 100, "generator": 50, "eval": 30, "transfer": 30},
    )
    assert out is not None and out["gpus"] > 0
    free, barred = out["runs"]["no barriers"], out["runs"]["barriers"]
    # Far more GPUs than trials: every stage runs in one wave, so barriers cost nothing here.
    # base 600 s + generator 150 s + eval 30 s (+ transfer 30 s with barriers: after every eval)
    assert free["makespan_hours"] * 3600 == pytest.approx(780)
    assert barred["makespan_hours"] * 3600 == pytest.approx(810)
    assert simulate_plan(cfg, plan(cfg), read_cluster(str(REPO / "clusters" / "aws.yaml")), {"base": 1}) is None


def test_nf_sweep_plan_prints_the_simulation() -> None:
    import argparse

    from orchestration.cluster.clusterfile import read_cluster
    from orchestration.commands.sweep import plan_with_cluster

    cfg = parse_config({**TINY, "storage": "unused", "resources": {"cpus": 3, "gpus": 0.5}})
    aws = str(REPO / "clusters" / "aws.yaml")
    seconds = {"base": 100.0, "generator": 50.0, "eval": 30.0, "transfer": 30.0}
    args = argparse.Namespace(cluster=aws, epoch_seconds="base=100,generator=50,eval=30,transfer=30")
    text = plan_with_cluster(args, cfg, plan(cfg))
    sim = simulate_plan(cfg, plan(cfg), read_cluster(aws), seconds)
    assert "simulated on the cluster at full size" in text and f"{sim['gpus']:g} GPUs" in text
    for name in ("no barriers", "barriers"):
        r = sim["runs"][name]
        row = f"    {name:<11}  {r['makespan_hours']:>10,.1f}  {100 * r['gpu_busy']:>7.0f}%"
        assert row in text.splitlines(), (row, text)
    # Not every stage timed: no simulation, and the output says why.
    args = argparse.Namespace(cluster=aws, epoch_seconds="base=100")
    assert "no makespan simulation" in plan_with_cluster(args, cfg, plan(cfg))


def test_ready_items_searcher_releases_in_dependency_order() -> None:
    """The runner's Tune searcher on its own (no trials run): what it hands out, and when."""
    from ray.tune.search import Searcher

    from orchestration.sweep.dataflow import ReadyItems, priorities

    cfg = parse_config({**TINY, "storage": "unused", "transfer": False, "generators": ["ConvS"], "train_bers": [0.05]})
    items = [it for s in STAGES for it in plan(cfg)[s]]  # 2 base, 2 generators, 2 evals
    written: set[str] = set()  # the done.json files the "trials" wrote
    s = ReadyItems(items, done=set(), is_done=lambda i: i in written, priority=priorities(cfg, items))
    first, second = s.suggest("t1")["item"]["id"], s.suggest("t2")["item"]["id"]
    assert {first, second} == {"digits.resnet18.b8.s0", "digits.vgg11.b8.s0"}
    assert s.suggest("t3") is None  # nothing else is ready while both base models train
    written.add(second)
    s.on_trial_complete("t2")
    gen = s.suggest("t3")["item"]  # the finished base model's generator, though the other still trains
    assert gen["stage"] == "generator" and gen["needs"] == [second]
    s.on_trial_complete("t1", error=True)  # the other base model fails
    assert s.suggest("t4") is None  # the generator still runs: its eval may come
    written.add(gen["id"])
    s.on_trial_complete("t3")
    assert s.suggest("t4")["item"]["id"] == f"eval.{gen['id']}"
    written.add(f"eval.{gen['id']}")
    s.on_trial_complete("t4")
    assert s.suggest("t5") == Searcher.FINISHED  # the rest needs the failed base model
    other_gen = next(it.id for it in items if it.stage == "generator" and it.needs == [first])
    assert s.failed == {first} and sorted(s.blocked) == sorted([other_gen, f"eval.{other_gen}"])
