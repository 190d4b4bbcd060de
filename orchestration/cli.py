"""`nf`: the user's command. Sweeps (Ray Tune + MLflow), the single-process pipeline, the cost model."""
from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

from nf_core import cli as core_cli
from orchestration.config import ConfigError, load_config, parse_config


def _sweep_run(args: argparse.Namespace) -> int:
    from orchestration.runner import run_sweep

    cfg = load_config(args.config)
    if args.storage:
        cfg = parse_config({**cfg.to_dict(), "storage": args.storage})
    return _run(cfg, resume=False, address=args.address)


def _sweep_resume(args: argparse.Namespace) -> int:
    from orchestration.runner import open_sweep

    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    return _run(cfg, resume=True, address=args.address)


def _run(cfg, resume: bool, address: str | None) -> int:
    from orchestration.results import format_table
    from orchestration.runner import artifact_location, run_sweep, sweep_store, tracking_uri
    from orchestration.tracking import ui_command

    rows = run_sweep(cfg, resume=resume, ray_address=address)
    store = sweep_store(cfg)
    print()
    print(format_table(rows))
    print(f"\nresults: {store.url('results')}  (results.parquet, transfer matrices and heat-maps)")
    print(f"browse:  {ui_command(tracking_uri(cfg, store))}   or   nf ui {cfg.name}")
    return 0


def _sweep_status(args: argparse.Namespace) -> int:
    from orchestration.runner import format_status, open_sweep, stage_states

    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    print(format_status(cfg, stage_states(cfg)))
    return 0


def _sweep_plan(args: argparse.Namespace) -> int:
    from orchestration.capacity import plan_with_cluster
    from orchestration.plan import plan

    cfg = load_config(args.config)
    print(plan_with_cluster(args, cfg, plan(cfg)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import yaml

    raw = yaml.safe_load(resources.files("orchestration").joinpath("demo.yaml").read_text())
    if args.storage:
        raw["storage"] = args.storage
    if args.name:
        raw["name"] = args.name
    cfg = parse_config(raw)
    from orchestration.runner import sweep_store

    return _run(cfg, resume=sweep_store(cfg).exists("sweep.yaml"), address=None)


def _ui(args: argparse.Namespace) -> int:
    from orchestration.runner import open_sweep, sweep_store, tracking_uri
    from orchestration.tracking import start_mlflow_server, stop_mlflow_server

    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    store = sweep_store(cfg)
    proc, url = start_mlflow_server(tracking_uri(cfg, store), store.url("mlartifacts"), port=args.port)
    print(f"MLflow UI for sweep {cfg.name!r}: {url}   (Ctrl-C stops it)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_mlflow_server(proc)
    return 0


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default="runs/sweeps", help="storage root the sweep lives in (path or s3://bucket/prefix)")
    p.add_argument("--s3-endpoint", default=None, help="endpoint of an S3-compatible store")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nf", description="NeuralFuse experiments and sweeps")
    sub = p.add_subparsers(dest="command", required=True)
    core_cli.add_core_commands(sub, pipeline_name="single")  # nf_core's one-process pipeline
    d = sub.add_parser("demo", help="a small but complete sweep on embedded defaults (local Ray, SQLite MLflow, digits)")
    d.add_argument("--storage", default=None)
    d.add_argument("--name", default=None)
    d.set_defaults(func=_demo)
    sw = sub.add_parser("sweep", help="run, resume, inspect sweeps").add_subparsers(dest="sweep_command", required=True)
    r = sw.add_parser("run", help="run a sweep config on Ray (local or RAY_ADDRESS)")
    r.add_argument("config")
    r.add_argument("--storage", default=None, help="override the config's storage")
    r.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    r.set_defaults(func=_sweep_run)
    rs = sw.add_parser("resume", help="continue a sweep whose driver stopped")
    rs.add_argument("name")
    _storage_args(rs)
    rs.add_argument("--address", default=None)
    rs.set_defaults(func=_sweep_resume)
    st = sw.add_parser("status", help="per stage: done / running / pending / failed")
    st.add_argument("name")
    _storage_args(st)
    st.set_defaults(func=_sweep_status)
    pl = sw.add_parser("plan", help="print the trials per stage without running anything")
    pl.add_argument("config")
    pl.add_argument("-v", "--verbose", action="store_true", help="list every trial")
    from orchestration.capacity import add_cluster_args

    add_cluster_args(pl)  # --cluster clusters/X.yaml, --epoch-seconds
    pl.set_defaults(func=_sweep_plan)
    u = sub.add_parser("ui", help="open the MLflow UI of a sweep")
    u.add_argument("name")
    _storage_args(u)
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(func=_ui)
    from orchestration.select_cmd import add_select_parser  # light: heavy imports happen in run_select

    add_select_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"nf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
