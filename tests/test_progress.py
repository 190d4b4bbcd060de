"""The live sweep view: its ETA maths and both renderings, driven by synthetic Tune events."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from orchestration.cli import build_parser
from orchestration.sweep.progress import ProgressCallback, SweepProgress, duration, error_line


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


ITEMS = {"base": ["b1", "b2"], "generator": ["g1", "g2", "g3", "g4"], "eval": ["e1", "e2", "e3", "e4"]}
EPOCHS = {"base": 4, "generator": 2, "eval": 1}


def _view(**kw) -> tuple[SweepProgress, io.StringIO, Clock]:
    out, clock = kw.pop("out", None) or io.StringIO(), Clock()
    kw = {"tty": False, "interval": 30.0, **kw}
    return SweepProgress(ITEMS, EPOCHS, name="t", out=out, clock=clock, **kw), out, clock


def test_duration() -> None:
    assert [duration(s) for s in (None, 0, 42.4, 185, 7620, 97200)] == ["?", "0s", "42s", "3m05s", "2h07m", "1d03h"]


def test_eta_from_measured_epoch_times() -> None:
    v, _, _ = _view()
    assert v.stage_eta("base") == (None, True) and v.sweep_eta() == (None, True)  # nothing measured yet
    v.started("b1")
    v.started("b2")
    v.result("b1", 1, 10.0)
    v.result("b2", 1, 10.0)
    # base: 10 s/epoch × (3 + 3) epochs left / 2 side by side
    assert v.stage_eta("base") == (pytest.approx(30.0), False)
    # generator, eval: not measured yet, borrow base's 10 s/epoch: 4 trials × 2 epochs / 2, then 4 × 1 / 2
    assert v.stage_eta("generator") == (pytest.approx(40.0), True)
    assert v.stage_eta("eval") == (pytest.approx(20.0), True)
    assert v.sweep_eta() == (pytest.approx(90.0), True)

    # First epochs pay the trial's start-up: once a later epoch is measured, only those count.
    v.result("b1", 2, 20.0)  # 20 s/epoch × (2 + 3) epochs left / 2
    assert v.stage_eta("base") == (pytest.approx(50.0), False)
    v.retrying("b2")  # a restarted trial's first report is one (first) epoch, whatever its number
    v.result("b2", 3, 6.0)
    assert v.first["base"] == [10.0, 10.0, 6.0] and v.samples["base"] == [20.0]
    v.result("b2", 3, 99.0)  # the final report repeats the last epoch: not an epoch time
    v.finished("b2")
    v.finished("b1")
    assert v.first["base"] == [10.0, 10.0, 6.0] and v.samples["base"] == [20.0]
    assert v.stage_eta("base") == (0.0, False)

    for g in ("g1", "g2"):
        v.started(g)
        v.result(g, 1, 4.0)
    # generator measured now: 4 s/epoch × (1 + 1 + 2 + 2) / 2
    assert v.stage_eta("generator") == (pytest.approx(12.0), False)
    v.failed("g3", "RuntimeError: boom")  # a failed trial is not retried in this run: no work left
    assert v.counts("generator") == {"done": 0, "running": 2, "pending": 1, "failed": 1}
    assert v.stage_eta("generator") == (pytest.approx(4.0 * 4 / 2), False)
    # eval borrows the mean epoch time of the measured stages, (20 + 4) / 2: a guess
    assert v.stage_eta("eval") == (pytest.approx(12.0 * 4 / 2), True)


def test_concurrency_is_capped_by_config_and_by_work_left() -> None:
    v, _, _ = _view(concurrency=3)
    assert v.concurrency("generator") == 3  # nothing started: the configured cap
    for i in ITEMS["generator"]:
        v.started(i)
    assert v.peak == 4 and v.concurrency("generator") == 3
    assert v.concurrency("base") == 2  # only two trials left in the stage


def test_items_done_before_a_resume_count_as_done() -> None:
    v, _, _ = _view(done=["b1", "b2", "g1"])
    assert v.counts("base") == {"done": 2, "running": 0, "pending": 0, "failed": 0}
    assert v.remaining_epochs("generator") == 3 * 2
    assert v.stage_text("base") == "base 2/2 done"


def test_log_file_rendering_is_plain_and_rate_limited() -> None:
    v, out, clock = _view(interval=30.0)
    v.tick()  # the first line goes out at once
    v.started("b1")
    v.started("b2")
    clock.t += 5
    v.result("b1", 1, 5.0)
    v.result("b2", 2, 4.0)
    v.tick()  # within the interval: nothing
    assert out.getvalue().count("\n") == 1
    clock.t += 30
    v.tick()
    line = out.getvalue().splitlines()[-1]
    assert "base 0/2 done, 2 running (epoch 1/4 2/4), ETA " in line
    assert "generator 0/4 done, 4 pending" in line and "| sweep ETA ~" in line and "+35s]" in line
    v.finished("b1")
    v.failed("b2", "ValueError: bad lr")
    lines = out.getvalue().splitlines()
    assert lines[-2:] == ["done    base      b1", "FAILED  base      b2: ValueError: bad lr"]
    v.tick(force=True)  # a Tune run ends: one line now, whatever the interval
    v.tick(force=True)  # ...but not the same line twice
    assert "base 1/2 done, 1 failed" in out.getvalue().splitlines()[-1]
    assert len(out.getvalue().splitlines()) == 5
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_terminal_rendering_redraws_in_place() -> None:
    v, out, clock = _view(tty=True)
    v.started("b1")
    v.result("b1", 2, 3.0)
    v.tick()
    first = out.getvalue()
    assert "\x1b" not in first  # nothing to erase yet
    block = first.splitlines()
    # base: 3 s/epoch × (2 + 4) epochs / 1 at a time; the other stages borrow base's epoch time
    assert block[:4] == [
        "sweep t: 0s elapsed, ETA ~54s",
        "  base 0/2 done, 1 running, 1 pending, ETA 18s",
        "  generator 0/4 done, 4 pending",
        "  eval 0/4 done, 4 pending",
    ]
    assert any(ln.strip().startswith("base") and "epoch 2/4" in ln and ln.endswith("b1") for ln in block)
    v.tick()  # redraws at most once a second
    assert out.getvalue() == first
    clock.t += 1.5
    v.tick()
    assert out.getvalue()[len(first) :].startswith(f"\x1b[{len(block)}F\x1b[J")  # up over the old block, clear
    v.log("stage base: finished")  # a line above the block: erase, print, redraw
    tail = out.getvalue().rsplit("\x1b[J", 1)[1]
    assert tail.startswith("stage base: finished\nsweep t: ")


def test_tune_callback_feeds_the_view() -> None:
    v, out, _ = _view()

    def trial(item: str, stage: str, error: str = "") -> SimpleNamespace:
        return SimpleNamespace(
            config={"item": {"id": item, "stage": stage}},
            get_error=lambda: error or None,  # Tune: error.txt's text
        )

    cb = ProgressCallback(v)
    g1, g2 = trial("g1", "generator"), trial("g2", "generator", "Traceback ...\n  line\nValueError: lr must be > 0")
    cb.on_trial_start(iteration=0, trials=[], trial=g1)
    cb.on_trial_start(iteration=0, trials=[], trial=g2)
    cb.on_trial_result(iteration=1, trials=[], trial=g1, result={"epoch": 1, "time_this_iter_s": 2.5, "loss": 1.0})
    assert v.trials["g1"].epoch == 1 and v.first["generator"] == [2.5]
    cb.on_trial_recover(iteration=1, trials=[], trial=trial("g1", "generator", "OSError: worker died"))
    assert "retry   generator g1: OSError: worker died" in out.getvalue()
    assert v.trials["g1"].state == "running" and v.trials["g1"].fresh
    cb.on_trial_complete(iteration=2, trials=[], trial=g1)
    cb.on_trial_error(iteration=2, trials=[], trial=g2)
    cb.on_trial_result(iteration=3, trials=[], trial=SimpleNamespace(config=None), result={})  # never raises
    assert v.counts("generator") == {"done": 1, "running": 0, "pending": 2, "failed": 1}
    assert "FAILED  generator g2: ValueError: lr must be > 0" in out.getvalue()
    # an item the plan did not list (another stage in the same Tune run) is tracked too
    cb.on_trial_start(iteration=4, trials=[], trial=trial("x1", "transfer"))
    assert v.counts("transfer")["running"] == 1


@pytest.mark.parametrize("command", [["sweep", "run", "x.yaml"], ["sweep", "resume", "x"], ["demo"]])
def test_verbose_and_interval_flags(command: list[str]) -> None:
    p = build_parser()
    assert p.parse_args(command).verbose == 0 and p.parse_args(command).progress_interval == 30.0
    assert p.parse_args([*command, "-v"]).verbose == 1
    assert p.parse_args([*command, "-vv", "--progress-interval", "5"]).progress_interval == 5.0


def test_the_callback_pickles_with_any_stream() -> None:
    """Tune pickles its callbacks with the experiment state, whatever stream the view writes to."""
    import pickle

    class Unpicklable(io.StringIO):
        def __reduce__(self):
            raise TypeError("cannot pickle this stream")

    v, _, _ = _view(out=Unpicklable())
    v.started("b1")
    copy = pickle.loads(pickle.dumps(ProgressCallback(v)))
    assert copy.view.counts("base")["running"] == 1


def test_error_line_is_type_and_first_line() -> None:
    text = (
        "Failure # 1 (occurred at 2026-01-01)\nray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n"
        '  File "x.py", line 3, in f\n    raise ValueError("old")\nValueError: old\n'
        "Failure # 2 (occurred at 2026-01-01)\nray::ImplicitFunc.train() (pid=2, ip=127.0.0.1)\n"
        '  File "x.py", line 3, in f\n    raise OSError(msg)\nOSError: AWS Error NETWORK_CONNECTION\ncurlCode: 28\n'
    )
    assert error_line(text) == "OSError: AWS Error NETWORK_CONNECTION"  # the latest failure, not its tail line
    assert error_line(TimeoutError("read timed out\nretries: 3")) == "TimeoutError: read timed out"


_FLAKY_SWEEP = """
import io, sys
from pathlib import Path
import ray
from ray import tune
from orchestration.sweep.progress import ProgressCallback, SweepProgress, compact_tune_output

if sys.argv[2] == "compact":
    compact_tune_output()  # what a sweep's compact view does
marker = Path(sys.argv[1]) / "failed_once"

def flaky(config):
    if not marker.exists():
        marker.write_text("1")
        raise OSError("When reading s3://nf/x: AWS Error NETWORK_CONNECTION: Timeout was reached\\ncurlCode: 28")
    tune.report({"epoch": 1, "done": 1.0})

view = SweepProgress({"generator": ["g1"]}, {"generator": 1}, name="t", out=sys.stdout, tty=False)
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
grid = tune.Tuner(
    flaky,
    param_space={"item": {"id": "g1", "stage": "generator"}},
    run_config=tune.RunConfig(
        storage_path=str(Path(sys.argv[1]) / "tune"),
        failure_config=tune.FailureConfig(max_failures=1),
        callbacks=[ProgressCallback(view)],
        verbose=0,
    ),
).fit()
print("state", view.trials["g1"].state, grid[0].error is None)
"""


def test_a_transient_failure_prints_one_retry_line_and_no_traceback(tmp_path) -> None:
    """Real Ray Tune, run as a sweep's driver runs it: a trainable whose first attempt hits an S3 timeout is
    retried; the output has one `retry <item>: <Type>: <first line>` line and no traceback (Tune's own
    `Trial task failed` log), which stays in the trial's error.txt."""
    import os
    import subprocess
    import sys

    script = tmp_path / "flaky.py"
    script.write_text(_FLAKY_SWEEP)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AIR_NEW_OUTPUT", "TUNE_PRINT_ALL_TRIAL_ERRORS")}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "compact"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "state done True" in lines
    assert [ln for ln in lines if ln.startswith("retry")] == [
        "retry   generator g1: OSError: When reading s3://nf/x: AWS Error NETWORK_CONNECTION: Timeout was reached"
    ]
    printed = proc.stdout + proc.stderr
    assert "Trial task failed" not in printed and 'File "' not in printed and "curlCode" not in printed
    errors = list((tmp_path / "tune").rglob("error.txt"))
    kept = errors[0].read_text() if errors else ""
    # the whole traceback, in the trial's files
    assert 'File "' in kept and "in flaky" in kept and "curlCode: 28" in kept
