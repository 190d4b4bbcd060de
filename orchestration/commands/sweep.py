"""`nf demo`, `nf sweep run|resume|status|list|plan` and `nf ui`: sweeps on Ray Tune, tracked in MLflow."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from typing import Any

from orchestration.store.roots import add_storage_args


def _sweep_run(args: argparse.Namespace) -> int:
    from orchestration.spec.config import ConfigError, load_config, parse_config, warn_implausible

    paths = args.config if isinstance(args.config, list) else [args.config]
    cfgs = []
    for path in paths:  # every file checked before anything starts
        try:
            cfg = load_config(path)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if len(paths) > 1 and path not in str(e) else str(e)) from None
        warn_implausible(cfg)
        if args.storage:
            cfg = parse_config({**cfg.to_dict(), "storage": args.storage})
        cfgs.append(cfg)
    return _run(cfgs, resume=False, address=args.address, args=args)


def _names(args: argparse.Namespace) -> list[str]:
    return args.name if isinstance(args.name, list) else [args.name]


def _sweep_resume(args: argparse.Namespace) -> int:
    from orchestration.spec.config import ConfigError, load_config, warn_implausible
    from orchestration.sweep.resume import with_storage
    from orchestration.sweep.runner import open_sweep

    names = _names(args)
    cfgs = [open_sweep(n, args.storage, args.s3_endpoint) for n in names]
    if args.config is None:
        return _run(cfgs, resume=True, address=args.address, args=args)
    if len(names) > 1:
        raise ConfigError(f"--config corrects one sweep; give one name, not {len(names)} ({', '.join(names)})")
    cfg = cfgs[0]
    fixed = load_config(args.config)
    warn_implausible(fixed)
    if fixed.name != cfg.name:
        raise ConfigError(f"{args.config}: name {fixed.name!r} is not the sweep's name {cfg.name!r}")
    # The sweep stays where it is (--storage is its identity), whatever the new file says.
    fixed = with_storage(fixed, cfg.storage, args.s3_endpoint or fixed.s3_endpoint or cfg.s3_endpoint)
    return _run([fixed], resume=True, address=args.address, args=args, new_config=True)


def _run(
    cfgs: Any, resume: bool, address: str | None, args: argparse.Namespace | None = None, new_config: bool = False
) -> int:
    from orchestration.errors import check_storage_writable
    from orchestration.store.results import format_table
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.preflight import check_dataset_roots
    from orchestration.sweep.runner import run_sweeps, tracking_uri
    from orchestration.tracking.server import check_tracking_reachable, ui_command

    cfgs = cfgs if isinstance(cfgs, list) else [cfgs]
    for cfg in cfgs:
        check_dataset_roots(cfg)  # before Ray starts or anything is written
        check_storage_writable(sweep_store(cfg))  # an unwritable or unreachable storage: one line, before Ray
        check_tracking_reachable(tracking_uri(cfg, sweep_store(cfg)))  # a server URI that does not answer: the same
    verbose = getattr(args, "verbose", 0) or 0
    if not verbose:  # the compact view replaces Tune's tables and Ray's info lines; errors still show
        from orchestration.sweep.progress import quiet_ray_logs

        quiet_ray_logs()
    interval = getattr(args, "progress_interval", None) or 30.0
    out = run_sweeps(
        cfgs, resume=resume, ray_address=address, verbose=verbose, progress_interval=interval, new_config=new_config
    )
    for cfg in cfgs:
        store = sweep_store(cfg)
        print()
        if len(cfgs) > 1:
            print(f"sweep {cfg.name}:")
        print(format_table(out[cfg.name]))
        print(f"\nresults: {store.url('results')}  (results.parquet, transfer matrices and heat-maps)")
        print(f"browse:  {ui_command(tracking_uri(cfg, store))}   or   nf ui {cfg.name}")
    return 0


def _sweep_status(args: argparse.Namespace) -> int:
    from orchestration.commands.views import format_items, format_status
    from orchestration.store.storage import Store
    from orchestration.sweep.runner import open_sweep
    from orchestration.sweep.status import states_of, sweep_status

    names = _names(args)
    cfgs = [open_sweep(n, args.storage, args.s3_endpoint) for n in names]  # every name checked first
    for k, (name, cfg) in enumerate(zip(names, cfgs, strict=True)):  # resolves the root as `nf sweep run` does
        store = Store(cfg.storage, args.s3_endpoint).sub(name)  # the storage given (or the default) is the one read
        statuses = sweep_status(cfg, store)
        if k:
            print()
        print(format_status(cfg, states_of(statuses), store.url()))
        print()
        print(format_items(statuses, failed_only=args.failed))
    return 0


def _sweep_list(args: argparse.Namespace) -> int:
    from orchestration.commands.views import format_sweep_list
    from orchestration.store.roots import resolve_storage
    from orchestration.store.storage import Store
    from orchestration.sweep.status import list_sweeps

    root = Store(resolve_storage(args.storage), args.s3_endpoint)  # the default root of `nf sweep run`
    print(format_sweep_list(root.url(), list_sweeps(root)))
    return 0


def plan_with_cluster(args: argparse.Namespace, cfg: Any, items: dict[str, list[Any]]) -> str:
    """What `nf sweep plan` prints: the plain plan, or the estimate when --cluster or --epoch-seconds is given."""
    from orchestration.commands.views import format_estimate, format_plan, reproduces_line

    cluster, seconds = getattr(args, "cluster", None), getattr(args, "epoch_seconds", None)
    if cluster is None and seconds is None:
        return format_plan(cfg, items, verbose=getattr(args, "verbose", False))
    from orchestration.cluster.capacity import estimate, parse_epoch_seconds

    parsed = parse_epoch_seconds(seconds) if isinstance(seconds, str) else seconds
    head, _, rest = format_estimate(estimate(cfg, items, cluster, parsed)).partition("\n")
    text = "\n".join([head, *reproduces_line(cfg), rest])
    if getattr(args, "verbose", False):
        text += "\n" + format_plan(cfg, items, verbose=True)
    return text


def _sweep_plan(args: argparse.Namespace) -> int:
    from orchestration.spec.config import ConfigError, load_config, warn_implausible
    from orchestration.spec.plan import plan

    paths = args.config if isinstance(args.config, list) else [args.config]
    cfgs = []
    for path in paths:  # every file checked before anything is printed
        try:
            cfgs.append(load_config(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if len(paths) > 1 and path not in str(e) else str(e)) from None
    if not args.no_data_check:
        from orchestration.sweep.preflight import check_dataset_roots

        for cfg in cfgs:
            check_dataset_roots(cfg)
    texts, total = [], 0
    for cfg in cfgs:
        warn_implausible(cfg)
        items = plan(cfg)
        total += sum(len(v) for v in items.values())
        texts.append(plan_with_cluster(args, cfg, items))
    print("\n\n".join(texts))
    if len(cfgs) > 1:
        print(f"\n{len(cfgs)} sweeps, {total:,} trials in all")
        together = _programme_text(args, cfgs)
        if together:
            print(together)
    return 0


def _programme_text(args: argparse.Namespace, cfgs: list[Any]) -> str | None:
    """With --cluster and --epoch-seconds: the sweeps simulated together, as one `nf sweep run` of all of
    them runs them, against one after another."""
    cluster, seconds = getattr(args, "cluster", None), getattr(args, "epoch_seconds", None)
    if cluster is None or seconds is None:
        return None
    from orchestration.cluster.capacity import parse_epoch_seconds, simulate_programme
    from orchestration.spec.plan import plan

    parsed = parse_epoch_seconds(seconds) if isinstance(seconds, str) else seconds
    sim = simulate_programme(cfgs, [plan(c) for c in cfgs], cluster, parsed)
    if sim is None:
        return "all sweeps together: no makespan simulation (a stage without --epoch-seconds, or no node fits a trial)"
    lines = [f"all {len(cfgs)} sweeps on the cluster's {sim['gpus']:g} GPUs (makespan, GPU-busy):"]
    labels = {
        "no barriers": "as one run (nf sweep run with all of them)",
        "no barriers, sweeps in turn": "one after another",
    }
    width = max(map(len, labels.values()))
    for key, label in labels.items():
        r = sim["runs"][key]
        lines.append(f"  {label:<{width}} {r['makespan_hours']:>10,.1f} h  {100 * r['gpu_busy']:>5.1f}%")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    import yaml

    from orchestration.spec.config import parse_config
    from orchestration.store.roots import CONFIG_FILE, sweep_store

    raw = yaml.safe_load(resources.files("orchestration").joinpath("demo.yaml").read_text())
    if args.storage:
        raw["storage"] = args.storage
    if args.name:
        raw["name"] = args.name
    cfg = parse_config(raw)
    code = _run([cfg], resume=sweep_store(cfg).exists(CONFIG_FILE), address=None, args=args)
    from orchestration.report.build import report_sweep

    index = report_sweep(cfg.name, cfg.storage, s3_endpoint=cfg.s3_endpoint)
    print(f"report:  {os.path.abspath(index)}   (open it in a browser; `nf report {cfg.name} --open`)")
    return code


def _ui(args: argparse.Namespace) -> int:
    from orchestration.errors import TrackingError, signals_ignored, signals_raise
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import open_sweep, tracking_uri
    from orchestration.tracking.server import check_port_free, server_log_tail, start_mlflow_server, stop_mlflow_server

    check_port_free(args.port)  # before anything starts: never report an old server as ours
    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    store = sweep_store(cfg)
    with signals_raise():  # SIGTERM / SIGHUP (a closed terminal) stop the server as Ctrl-C does
        try:
            proc, url = start_mlflow_server(tracking_uri(cfg, store), store.url("mlartifacts"), port=args.port)
        except KeyboardInterrupt:
            return 0  # stopped while starting: start_mlflow_server stopped its server
        try:  # the URL inside: a signal that lands right after it is printed still stops the server cleanly
            print(f"MLflow UI for sweep {cfg.name!r}: {url}   (Ctrl-C stops it)", flush=True)
            code = proc.wait()
            tail = server_log_tail(proc)
        except KeyboardInterrupt:
            return 0
        finally:
            with signals_ignored():  # a second Ctrl-C must not leave the server's workers behind
                stop_mlflow_server(proc)
    raise TrackingError(f"the MLflow server for {url} exited by itself with code {code}: {tail}")


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="Ray Tune's own trial tables instead of the compact progress view (-vv: every result)",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="when stdout is not a terminal: seconds between status lines (default: 30)",
    )


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """`--cluster` and `--epoch-seconds` for `nf sweep plan`."""
    parser.add_argument(
        "--cluster",
        default=None,
        metavar="YAML",
        help="Ray cluster launcher YAML or KubeRay manifest (clusters/*.yaml): show how the trials pack onto its GPUs",
    )
    parser.add_argument(
        "--epoch-seconds",
        default=None,
        metavar="S",
        help="measured seconds per epoch: one number, or per stage as "
        "base=600,generator=120,eval=30,transfer=60 (eval/transfer: per trial)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `demo`, `sweep …` and `ui` on the `nf` parser."""
    d = sub.add_parser(
        "demo", help="a small but complete sweep on embedded defaults (local Ray, SQLite MLflow, digits)"
    )
    d.add_argument(
        "--storage", default=None, help="storage root (default: $NF_STORAGE, else runs/sweeps in the project)"
    )
    d.add_argument("--name", default=None, help="sweep name (default: demo)")
    _output_args(d)
    d.set_defaults(func=_demo)

    sw = sub.add_parser("sweep", help="run, resume, inspect sweeps").add_subparsers(dest="sweep_command", required=True)
    r = sw.add_parser("run", help="run a sweep config on Ray (local or RAY_ADDRESS)")
    r.add_argument(
        "config",
        nargs="+",
        help="sweep config YAML (orchestration/spec/config.py documents every field); several: "
        "one run of all of them, each sweep with its own name, storage, MLflow experiment and results",
    )
    r.add_argument("--storage", default=None, help="override the config's storage")
    _address_arg(r)
    _output_args(r)
    r.set_defaults(func=_sweep_run)

    rs = sw.add_parser("resume", help="continue a sweep whose driver stopped")
    rs.add_argument("name", nargs="+", help="the sweep's name (several: continue them as one run)")
    rs.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a corrected sweep config: accepted when no completed item's parameters change "
        "(completed items are kept; the old config is kept as sweep.<timestamp>.yaml)",
    )
    add_storage_args(rs)
    _address_arg(rs)
    _output_args(rs)
    rs.set_defaults(func=_sweep_resume)

    st = sw.add_parser(
        "status",
        help="per stage: done / running / pending / failed; per item: epoch, last metrics, attempts, error",
    )
    st.add_argument("name", nargs="+", help="the sweep's name (several: one status each)")
    st.add_argument("--failed", action="store_true", help="list only the failed items, with their whole error")
    add_storage_args(st)
    st.set_defaults(func=_sweep_status)

    ls = sw.add_parser("list", help="the sweeps in a storage root with their progress")
    add_storage_args(ls)
    ls.set_defaults(func=_sweep_list)

    pl = sw.add_parser("plan", help="print the trials per stage without running anything")
    pl.add_argument("config", nargs="+", help="sweep config YAML (several: a programme, e.g. sweeps/*.yaml)")
    pl.add_argument("-v", "--verbose", action="store_true", help="list every trial")
    pl.add_argument(
        "--no-data-check",
        action="store_true",
        help="skip checking that the dataset roots hold their files (plan without access to the data)",
    )
    add_cluster_args(pl)
    pl.set_defaults(func=_sweep_plan)

    u = sub.add_parser("ui", help="open the MLflow UI of a sweep")
    u.add_argument("name", help="the sweep's name")
    add_storage_args(u)
    u.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    u.set_defaults(func=_ui)
