"""How `nf` ends: exit codes, the one `nf: error: …` line for any failure, signals as exceptions.

Standard library only (the CLI imports it before any command runs). A command raises; ``describe``
turns the exception into an exit code and one line that names the file, object or field at fault.
The full traceback is printed only with ``nf --debug``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

EXIT_OK = 0
EXIT_FAILED_TRIALS = 1  # the sweep ran, and some trials failed (fix, then `nf sweep resume`)
EXIT_USAGE = 2  # bad command line, config, field value or input file: nothing was started
EXIT_STORAGE = 3  # storage or tracking unreachable, not writable, or an object in it is missing
EXIT_INTERNAL = 4  # a bug: an error nf does not know; run again with --debug and report the traceback
# 128 + N: stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), as shells report it.

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    a sweep finished with failed trials (see `nf sweep status NAME`, fix, `nf sweep resume NAME`)
  2    bad usage, config, field value or input file (nothing was started)
  3    storage or tracking unreachable or not writable, or an object in it missing
  4    internal error (a bug: rerun with `nf --debug …` and report the traceback)
  130  interrupted by Ctrl-C; 143 by SIGTERM; 129 by SIGHUP (128 + the signal's number)
Every failure prints one line `nf: error: …`; `nf --debug …` adds the traceback."""


class NfError(Exception):
    """An error with a known exit code and a message meant for the user as it is."""

    exit_code = EXIT_INTERNAL


class StorageError(NfError):
    """Storage (local or S3) or the tracking store cannot be reached, written, or lacks an object."""

    exit_code = EXIT_STORAGE


class TrackingError(StorageError):
    """The MLflow tracking store or server cannot be reached or started."""


class PortInUse(NfError):
    """A server port already answers or is bound by another process."""

    exit_code = EXIT_USAGE


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread the way Python raises KeyboardInterrupt for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # signals turned into Interrupted, latest last


_ctrl_c: list[int] = []  # Ctrl-Cs seen (they raise Python's own KeyboardInterrupt)


def _raise_interrupted(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _raise_ctrl_c(signum: int, frame: object) -> None:
    _ctrl_c.append(signum)
    signal.default_int_handler(signum, frame)


def raise_if_interrupted() -> None:
    """Raise again a signal whose exception was swallowed on its way out: a signal that lands while
    the interpreter runs a GC or weakref callback (SQLAlchemy has many) is printed as "Exception
    ignored in …" and lost, so long loops call this between steps."""
    if _received:
        raise Interrupted(_received[-1])
    if _ctrl_c:
        raise KeyboardInterrupt


@contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signums`` raise :class:`Interrupted` (a KeyboardInterrupt), so ``finally`` and
    ``except KeyboardInterrupt`` clean-ups run for a `kill` or a closed terminal as they do for Ctrl-C.

    Ray Tune's own SIGINT handler (which would end a stage quietly and let the sweep go on to the next
    one) is turned off too, so Ctrl-C stops the command. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = not any(signal.getsignal(s) is _raise_interrupted for s in signums)
    if outermost:
        _received.clear()  # the outermost block: signals of an earlier command do not count
        _ctrl_c.clear()
        # a parent may hand us these signals blocked (a process that ran Ray in-process blocks SIGINT in
        # its main thread, and children inherit the mask): then Ctrl-C or a kill would never arrive
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, *signums})
    old = {s: signal.signal(s, _raise_interrupted) for s in signums}
    if outermost and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_ctrl_c)  # still KeyboardInterrupt, now recorded
    old_tune = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if old_tune is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_tune


@contextmanager
def keep_signal_handlers(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Around a library call that installs its own handlers (``ray.init`` sets one for SIGTERM that exits
    at once): put back the ones :func:`signals_raise` installed, so a `kill` still ends MLflow runs and
    stops servers first. Ray's local processes are still stopped by its atexit hook."""
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.getsignal(s) for s in signums} if main else {}
    try:
        yield
    finally:
        for s, h in old.items():
            if h is _raise_interrupted:
                signal.signal(s, h)


@contextmanager
def signals_ignored(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signums`` are ignored: a clean-up (stopping a server) is not cut short by a
    second Ctrl-C or `kill`. Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------- describe
_S3_ERROR = re.compile(
    r"When (?P<doing>[\w ]+?) (?:key|for key|bucket)? ?'(?P<key>[^']*)'(?: in bucket '(?P<bucket>[^']*)')?: "
    r"AWS Error (?P<code>[\w ]+?) during (?P<op>\w+) operation: (?P<detail>.*)"
)
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't connect", "timed out", "resolve host")
_STORAGE_FILES = (f"orchestration{os.sep}storage.py", f"pyarrow{os.sep}", "pyarrow/")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _frames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename
        tb = tb.tb_next


def _from_storage(exc: BaseException) -> bool:
    """True when the exception was raised inside the sweep storage layer (pyarrow's filesystems)."""
    return any(any(part in f for part in _STORAGE_FILES) for f in _frames(exc.__traceback__))


def _s3_message(text: str) -> str | None:
    """pyarrow's S3 error rewritten to name the object (s3://bucket/key) and the cause, or None."""
    m = _S3_ERROR.search(text)
    if not m:
        return None
    obj = f"s3://{m['bucket']}/{m['key']}" if m["bucket"] else f"s3://{m['key']}"
    detail = m["detail"].split("; Details:")[-1].strip() if "; Details:" in m["detail"] else m["detail"]
    if any(s in text for s in _UNREACHABLE):
        return f"S3 storage unreachable ({obj}): {detail}"
    if m["code"].strip() in ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH"):
        return f"S3 refused access to {obj} ({m['code'].strip()}): {detail}"
    if m["code"].strip() in ("NO_SUCH_BUCKET", "NO_SUCH_KEY", "RESOURCE_NOT_FOUND"):
        return f"missing S3 object {obj} ({m['code'].strip()}): {detail}"
    return f"S3 error on {obj} ({m['code'].strip()} during {m['op']}): {detail}"


def _class_named(exc: BaseException, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing ``module`` (it is loaded if exc came from it)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (without the ``nf: error:`` prefix) for an exception."""
    if isinstance(exc, Interrupted):
        return 128 + exc.signum, f"interrupted by {signal.Signals(exc.signum).name}"
    if isinstance(exc, KeyboardInterrupt):
        if _received:  # a library caught our Interrupted and raised a plain KeyboardInterrupt instead
            return describe(Interrupted(_received[-1]))
        return 128 + signal.SIGINT, "interrupted (Ctrl-C)"
    text = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, NfError):
        return exc.exit_code, text
    if _class_named(exc, "orchestration.sweep.runner", "SweepError"):
        return EXIT_FAILED_TRIALS, text
    if _class_named(exc, "mlflow.exceptions", "MlflowException") or _class_named(
        exc, "sqlalchemy.exc", "SQLAlchemyError"
    ):
        return EXIT_STORAGE, f"MLflow tracking: {text}"
    if isinstance(exc, OSError):
        s3 = _s3_message(text)
        if s3 is not None:
            return EXIT_STORAGE, s3
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        if isinstance(exc, FileNotFoundError):
            if _from_storage(exc):
                return EXIT_STORAGE, f"missing in storage: {text}"
            return EXIT_USAGE, text if where.strip() in text else f"{text}:{where}"
        if isinstance(exc, PermissionError) and _from_storage(exc):
            return EXIT_STORAGE, f"storage not writable:{where}: permission denied" if where else text
        return EXIT_STORAGE if _from_storage(exc) else EXIT_USAGE, text
    if isinstance(exc, (ValueError, NotImplementedError)):
        # ConfigError and the registries' "unknown … valid choices" are ValueErrors naming the bad value
        return EXIT_USAGE, text
    if _class_named(exc, "yaml", "YAMLError"):
        return EXIT_USAGE, f"not valid YAML: {text}"
    # TypeError, KeyError …: a bug (bad input is caught earlier, as a ValueError naming the field)
    return EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {text} (rerun with `nf --debug …` for the traceback)"


_PROBE = ".nf-write-probe"


def check_storage_writable(store: object) -> None:
    """Write and delete a probe file in a sweep's storage (local or S3) before Ray starts or anything else is
    written; raises :class:`StorageError` naming the storage when it cannot be written or reached."""
    url = store.url()  # type: ignore[attr-defined]
    try:
        store.write_bytes(_PROBE, b"")  # type: ignore[attr-defined]
        store.fs.delete_file(store.path(_PROBE))  # type: ignore[attr-defined]
    except OSError as e:
        text = _one_line(str(e))
        s3 = _s3_message(text)
        if s3 is not None:
            raise StorageError(f"storage {url} cannot be written: {s3}") from e
        reason = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else text
        raise StorageError(f"storage {url} is not writable: {reason}") from e
