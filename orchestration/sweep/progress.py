"""A compact live view of a running sweep, in place of Ray Tune's per-trial tables.

Per stage: done / running / pending / failed, the epoch of each running trial, and an ETA
for the stage and the sweep from the epoch times measured so far. A trial's stage is read
from its config (``config["item"]["stage"]``), so one Tune run may hold trials of several
stages. Two renderings:

- stdout is a terminal: a small block redrawn in place (at most once a second);
- stdout is a pipe or a file: no cursor movement, no carriage return; one short status line
  at most every ``interval`` seconds, plus one line per finished or failed trial.

`nf sweep run -v` turns the view off and gives Ray Tune's own output back.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

STATES = ("done", "running", "pending", "failed")
REFRESH_S = 1.0  # terminal block: redraw at most this often
MAX_TRIAL_LINES = 8  # terminal block: running trials listed one per line, the rest summed up


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``1d03h``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@dataclass
class TrialState:
    stage: str
    state: str = "pending"
    epoch: int = 0  # last epoch reported (or found done)
    fresh: bool = True  # no result yet since it (re)started: its first epoch time includes start-up
    error: str = ""


class SweepProgress:
    """The state of a sweep's trials, the ETA maths and their rendering.

    ``items``: the item ids of each stage, in stage order; ``epochs``: epochs per trial of each
    stage (an evaluation trial reports once: 1); ``done``: items finished before this run.
    ``clock`` and ``out`` are parameters so tests can drive the view with synthetic events.
    """

    def __init__(
        self,
        items: Mapping[str, Sequence[str]],
        epochs: Mapping[str, int],
        done: Iterable[str] = (),
        *,
        name: str = "",
        out: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 30.0,
        concurrency: int | None = None,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.stages = list(items)
        self.epochs = {s: max(1, int(epochs.get(s, 1))) for s in self.stages}
        done = set(done)
        self.trials: dict[str, TrialState] = {}
        for stage, ids in items.items():
            for i in ids:
                st = TrialState(stage)
                if i in done:
                    st.state, st.epoch = "done", self.epochs[stage]
                self.trials[i] = st
        self.out = out if out is not None else sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)()) if tty is None else tty
        self.interval = interval
        self.max_concurrent = concurrency
        self._log = log
        self.clock = clock
        self.t0 = clock()
        # Seconds per epoch. A trial's first report after it (re)starts also pays its start-up
        # (worker, imports, data): kept apart, used only while a stage has no other.
        self.samples: dict[str, list[float]] = {s: [] for s in self.stages}
        self.first: dict[str, list[float]] = {s: [] for s in self.stages}
        self.peak = 0  # most trials seen running at once
        self._running: set[str] = set()
        self._last_line: float | None = None  # non-TTY: when the last status line went out
        self._last_text = ""
        self._last_draw: float | None = None
        self._drawn = 0  # TTY: lines of the block now on screen

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the live view is not worth
        # restoring, and its stream may not pickle (pytest's capture): a copy writes to stdout.
        return {**self.__dict__, "out": None, "_log": None, "_drawn": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = sys.stdout

    # ---- events -----------------------------------------------------------------------
    def _trial(self, item_id: str, stage: str | None) -> TrialState:
        if item_id not in self.trials:  # an item the plan did not list: track it anyway
            stage = stage or "?"
            if stage not in self.stages:
                self.stages.append(stage)
                self.epochs[stage] = 1
                self.samples[stage], self.first[stage] = [], []
            self.trials[item_id] = TrialState(stage)
        return self.trials[item_id]

    def started(self, item_id: str, stage: str | None = None) -> None:
        t = self._trial(item_id, stage)
        t.state, t.fresh, t.error = "running", True, ""
        self._running.add(item_id)
        self.peak = max(self.peak, self.running_count())

    def result(self, item_id: str, epoch: int | None, seconds: float | None, stage: str | None = None) -> None:
        """A trial reported ``epoch`` after ``seconds`` (Tune's ``time_this_iter_s``)."""
        t = self._trial(item_id, stage)
        if t.state != "running":
            self.started(item_id, stage)
        if epoch is None or epoch <= t.epoch and not t.fresh:
            return  # the final report repeats the last epoch: no new epoch time
        if seconds is not None and seconds > 0:
            if t.fresh:  # one epoch (plus the start-up), whatever its number after a restart
                self.first[t.stage].append(seconds)
            else:
                self.samples[t.stage].append(seconds / max(1, epoch - t.epoch))
        t.epoch, t.fresh = epoch, False

    def finished(self, item_id: str, stage: str | None = None) -> str:
        t = self._trial(item_id, stage)
        t.state, t.epoch = "done", self.epochs[t.stage]
        self._running.discard(item_id)
        return self._say(f"done    {t.stage:<9} {item_id}")

    def failed(self, item_id: str, error: str = "", stage: str | None = None) -> str:
        t = self._trial(item_id, stage)
        t.state, t.error = "failed", error
        self._running.discard(item_id)
        return self._say(f"FAILED  {t.stage:<9} {item_id}" + (f": {error}" if error else ""))

    def retrying(self, item_id: str, stage: str | None = None, error: str | None = None) -> None:
        """A trial failed and Tune starts it again (``max_failures``): running, from its checkpoint.
        With ``error`` (a failure, not a quiet restore) it gets a line of its own."""
        t = self._trial(item_id, stage)
        t.state, t.fresh = "running", True
        self._running.add(item_id)
        if error is not None:
            self._say(f"retry   {t.stage:<9} {item_id}" + (f": {error}" if error else ""))

    # ---- maths ------------------------------------------------------------------------
    def running_count(self) -> int:
        return len(self._running)  # kept as trials start and end: no scan of every item per event

    def counts(self, stage: str) -> dict[str, int]:
        c = dict.fromkeys(STATES, 0)
        for t in self.trials.values():
            if t.stage == stage:
                c[t.state] += 1
        return c

    def seconds_per_epoch(self, stage: str) -> float | None:
        """Mean measured epoch time of a stage (first epochs only while there is nothing else;
        an evaluation trial reports once, so its "epoch" is the whole trial)."""
        s = self.samples.get(stage) or self.first.get(stage)
        return sum(s) / len(s) if s else None

    def _fallback_rate(self) -> float | None:
        rates = [r for r in map(self.seconds_per_epoch, self.stages) if r is not None]
        return sum(rates) / len(rates) if rates else None

    def remaining_epochs(self, stage: str) -> int:
        """Epochs still to train in a stage (failed trials are not retried in this run)."""
        return sum(
            self.epochs[stage] - min(t.epoch, self.epochs[stage])
            for t in self.trials.values()
            if t.stage == stage and t.state in ("running", "pending")
        )

    def concurrency(self, stage: str) -> int:
        """Trials of ``stage`` that will run side by side: the most seen at once (or the
        configured cap before any started), never more than the stage has left."""
        left = sum(t.stage == stage and t.state in ("running", "pending") for t in self.trials.values())
        conc = self.peak or self.max_concurrent or 1
        if self.max_concurrent:
            conc = min(conc, self.max_concurrent)
        return max(1, min(conc, left))

    def stage_eta(self, stage: str) -> tuple[float | None, bool]:
        """(seconds left in ``stage``, whether it is a guess from another stage's epoch time)."""
        left = self.remaining_epochs(stage)
        if left == 0:
            return 0.0, False
        rate, guess = self.seconds_per_epoch(stage), False
        if rate is None:
            rate, guess = self._fallback_rate(), True
        if rate is None:
            return None, True
        return rate * left / self.concurrency(stage), guess

    def sweep_eta(self) -> tuple[float | None, bool]:
        """Seconds until the sweep ends: the stages one after another (each waits for the
        checkpoints of the one before); a stage not yet measured borrows the mean epoch time
        of those that are, and makes the whole estimate a guess."""
        total, guess = 0.0, False
        for stage in self.stages:
            eta, g = self.stage_eta(stage)
            if eta is None:
                return None, True
            total += eta
            guess = guess or (g and eta > 0)
        return total, guess

    # ---- rendering --------------------------------------------------------------------
    def _eta_text(self, eta: float | None, guess: bool) -> str:
        return ("~" if guess and eta is not None else "") + duration(eta)

    def _epochs_of_running(self, stage: str) -> list[str]:
        return [
            f"{t.epoch}/{self.epochs[stage]}" for t in self.trials.values() if t.stage == stage and t.state == "running"
        ]

    def stage_text(self, stage: str, with_epochs: bool = True) -> str:
        """``generator 3/8 done, 4 running, 1 pending, 1 failed (epoch 2/3 1/3 …), ETA 5m10s``:
        counts that are zero are left out; the ETA of a stage shows while it runs."""
        c = self.counts(stage)
        total = sum(c.values())
        text = f"{stage} {c['done']}/{total} done"
        text += "".join(f", {c[s]} {s}" for s in ("running", "pending", "failed") if c[s])
        if with_epochs and c["running"] and self.epochs[stage] > 1:
            shown = self._epochs_of_running(stage)
            more = f" +{len(shown) - MAX_TRIAL_LINES}" if len(shown) > MAX_TRIAL_LINES else ""
            text += f" (epoch {' '.join(shown[:MAX_TRIAL_LINES])}{more})"
        if c["running"]:
            text += f", ETA {self._eta_text(*self.stage_eta(stage))}"
        return text

    def status_line(self) -> str:
        """One line for a log file: wall time, time since start, every stage, the sweep's ETA."""
        elapsed = duration(self.clock() - self.t0)
        stages = " | ".join(self.stage_text(s) for s in self.stages if any(self.counts(s).values()))
        return f"[{time.strftime('%H:%M:%S')} +{elapsed}] {stages} | sweep ETA {self._eta_text(*self.sweep_eta())}"

    def block(self, width: int = 100) -> list[str]:
        """The terminal view: a header, one line per stage, one per running trial (capped)."""
        eta = self._eta_text(*self.sweep_eta())
        lines = [f"sweep {self.name}: {duration(self.clock() - self.t0)} elapsed, ETA {eta}"]
        running = []
        for stage in self.stages:
            if any(self.counts(stage).values()):
                lines.append("  " + self.stage_text(stage, with_epochs=False))
            running += [(i, t) for i, t in self.trials.items() if t.stage == stage and t.state == "running"]
        for i, t in running[:MAX_TRIAL_LINES]:
            lines.append(f"    {t.stage:<9} epoch {t.epoch}/{self.epochs[t.stage]:<4} {i}")
        if len(running) > MAX_TRIAL_LINES:
            lines.append(f"    … and {len(running) - MAX_TRIAL_LINES} more running")
        return [ln if len(ln) <= width else ln[: width - 1] + "…" for ln in lines]

    # ---- output -----------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _erase(self) -> None:
        if self.tty and self._drawn:
            # Up to the block's first line, then clear to the end of the screen.
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)  # no wrapping: the line count stays true
        lines = self.block(width)
        self._write("".join(ln + "\n" for ln in lines))
        self._drawn = len(lines)
        self._last_draw = self.clock()

    def log(self, message: str) -> None:
        """A line above the live view (the runner's own messages go through here)."""
        self._erase()
        if self._log is not None:
            self._log(message)
        else:
            self._write(message + "\n")
        if self.tty and self._last_draw is not None:
            self._draw()

    def _say(self, line: str) -> str:
        self.log(line)
        return line

    def tick(self, force: bool = False) -> None:
        """Called often (every Tune step): prints when it is time to."""
        now = self.clock()
        if self.tty:
            if force or self._last_draw is None or now - self._last_draw >= REFRESH_S:
                self._erase()
                self._draw()
        elif force or self._last_line is None or now - self._last_line >= self.interval:
            line = self.status_line()
            if force and line == self._last_text:
                return  # nothing new since the last line (a Tune run ending right after a status line)
            self._last_line, self._last_text = now, line
            self._write(line + "\n")

    def callback(self) -> Any:
        """The Ray Tune callback that feeds this view."""
        return ProgressCallback(self)


def for_sweep(cfg: Any, store: Any = None, **kw: Any) -> SweepProgress:
    """The view of a sweep: its plan, and the items its storage already marks done."""
    from orchestration.spec.plan import plan

    store = store if store is not None else _store(cfg)
    items = plan(cfg)
    done = [it.id for s, its in items.items() for it in its if store.exists(f"items/{s}/{it.id}/done.json")]
    epochs = {"base": cfg.base.epochs, "generator": cfg.generator.epochs}
    return SweepProgress(
        {s: [it.id for it in its] for s, its in items.items() if its},
        {s: epochs.get(s, 1) for s in items},
        done,
        name=cfg.name,
        concurrency=cfg.resources.max_concurrent,
        **kw,
    )


def _store(cfg: Any) -> Any:
    from orchestration.store.roots import sweep_store

    return sweep_store(cfg)


def for_sweeps(cfgs: Sequence[Any], stores: Sequence[Any], **kw: Any) -> SweepProgress:
    """One view of several sweeps run together: their items keyed ``sweep/id`` (as their trials are)."""
    items: dict[str, list[str]] = {}
    done: list[str] = []
    epochs: dict[str, int] = {}
    for cfg, store in zip(cfgs, stores, strict=True):
        one = for_sweep(cfg, store)
        for stage in one.stages:
            items.setdefault(stage, []).extend(f"{cfg.name}/{i}" for i, t in one.trials.items() if t.stage == stage)
            epochs[stage] = max(epochs.get(stage, 1), one.epochs[stage])
        done += [f"{cfg.name}/{i}" for i, t in one.trials.items() if t.state == "done"]
    caps = [cfg.resources.max_concurrent for cfg in cfgs]
    return SweepProgress(
        items, epochs, done, name=" + ".join(c.name for c in cfgs), concurrency=sum(caps) if all(caps) else None, **kw
    )


def _item(trial: Any) -> tuple[str | None, str | None]:
    config = getattr(trial, "config", None) or {}
    item = config.get("item") or {}
    return config.get("key") or item.get("id"), item.get("stage")


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")  # "OSError: …" at the start of a line (frames are indented)


def error_line(err: Any) -> str:
    """``ExceptionType: first line of its message`` of an exception, or of a traceback's text (the line
    after the last frame of its last ``Failure #`` block, as Tune's error.txt holds them). One line, ≤ 300 chars."""
    if isinstance(err, BaseException):
        cause = getattr(err, "cause", None)  # RayTaskError wraps the trainable's own exception
        exc = cause if isinstance(cause, BaseException) else err
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
    text = str(err or "").rsplit("Failure # ", 1)[-1]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # the exception line follows the last (indented) frame; the message's own further lines follow it
    after = max((i for i, ln in enumerate(lines) if ln[0].isspace()), default=-1) + 1
    exc = next((ln for ln in lines[after:] if _EXC_LINE.match(ln)), None)
    line = exc or (lines[-1] if lines else "")
    return line.strip()[:300]


def _error_text(trial: Any) -> str:
    """The one-line reason of a trial's latest failure; its full traceback stays in the item's
    status.json (``traceback``) and Tune's error.txt, never in the progress output.

    Read from the trial's local error.txt first: Tune writes it just before the recover/error
    callbacks, while the copy ``get_error`` reads from the storage path is synced only later."""
    path = getattr(trial, "error_file", None)
    try:
        if isinstance(path, str) and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return error_line(f.read())
        return error_line(trial.get_error())
    except Exception:  # noqa: BLE001 - the error file may be gone: the line just says less
        return ""


try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - the view's maths and rendering need no Ray
    _TuneCallback = object  # type: ignore[assignment,misc]


class ProgressCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Feeds a SweepProgress from Tune's trial events (driver side).

    A display must never stop a sweep: every hook swallows (and logs at debug) its own errors.
    """

    def __init__(self, view: SweepProgress) -> None:
        self.view = view

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).debug("progress view failed", exc_info=True)

    # Hook signatures as in ray/tune/callback.py (2.60).
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._guard(self.view.tick)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guard(lambda: self.view.started(*_item(trial)))

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guard(lambda: self.view.retrying(*_item(trial)))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guard(lambda: self.view.retrying(*_item(trial), _error_text(trial)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        def go() -> None:
            item, stage = _item(trial)
            epoch = result.get("epoch")
            self.view.result(item, int(epoch) if epoch is not None else None, result.get("time_this_iter_s"), stage)
            self.view.tick()

        self._guard(go)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guard(lambda: self.view.finished(*_item(trial)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        def go() -> None:
            item, stage = _item(trial)
            self.view.failed(item, _error_text(trial), stage)

        self._guard(go)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._guard(self.view.tick, True)


class LiveView:
    """What the runner holds: the compact view (``verbose == 0``) or nothing but Tune's own output."""

    def __init__(
        self, cfg: Any, store: Any, verbose: int, log: Callable[[str], None] = print, interval: float = 30.0
    ) -> None:
        several = isinstance(cfg, list | tuple)
        if verbose != 0:
            self.view = None
        elif several and len(cfg) > 1:
            self.view = for_sweeps(cfg, store, log=log, interval=interval)
        else:
            one, where = (cfg[0], store[0]) if several else (cfg, store)
            self.view = for_sweep(one, where, log=log, interval=interval)
        self.log: Callable[[str], None] = self.view.log if self.view else log
        self.callbacks: list[Any] = [self.view.callback()] if self.view else []
        self.tune_verbose = 0 if self.view else verbose
        if self.view:
            compact_tune_output()


def compact_tune_output() -> None:
    """Tune's own output off while the compact view prints (read by Tune when a run starts)."""
    # Tune's new output engine prints an experiment table and a results path at every
    # fit even when silent; its legacy engine at verbosity 0 prints nothing.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Tune logs every trial failure with its whole traceback; the view prints one line
    # (`retry …: Type: reason` / `FAILED …`) and the traceback stays in the item's files.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"


def quiet_ray_logs() -> None:
    """Ray's info and warning lines on the driver (its start banner, Tune's notes) stay out of
    the compact view; errors still show. Set on child loggers: ``ray.init`` resets ``ray``'s own level."""
    for name in ("ray._private", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("mlflow.store").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
