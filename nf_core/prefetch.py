"""Chips off the critical path: the chips of step k+1 are prepared while step k computes.

A single background thread draws each chip's fault map on the CPU from the deterministic
seed (integer-only arithmetic on the CPU copy of the stored codes, so a chip seed gives
bit-identical codes on every device), and hands the int8 codes to the device, on a side CUDA
stream when there is one. The consumer dequantizes on the device (`DeployedModel.stacked_from_codes`).
Default: on with a CUDA device, off on the CPU (where the thread would only compete for the
same cores); ``force=True`` runs the same path on the CPU, which is how the tests exercise it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.deployed import DeployedModel


def prefetch_default(device: torch.device | str) -> bool:
    """Prefetch chips on CUDA devices only (on the CPU the step already uses every core)."""
    return torch.device(device).type == "cuda"


class _Ready:
    """Device codes plus the CUDA event that marks their copy done (None on the CPU)."""

    def __init__(self, codes: list[torch.Tensor], event: torch.cuda.Event | None) -> None:
        self.codes, self.event = codes, event

    def wait(self) -> list[torch.Tensor]:
        if self.event is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(self.event)
            for c in self.codes:
                c.record_stream(stream)  # the side-stream buffer is now used on the compute stream
        return self.codes


class ChipPrefetcher:
    """Codes for the keys of a known sequence, prepared one key ahead in a background thread.

    ``seeds_of(key)`` gives the chip seeds of a key (a training step, or a group of evaluation
    chips); `get(key)` returns one (N, total) int8 tensor per base model, on its device, and
    starts preparing ``next_key(key)``.
    """

    def __init__(
        self,
        bases: Sequence[DeployedModel],
        chip: ChipConfig,
        seeds_of: Callable[[Hashable], Sequence[int]],
        next_key: Callable[[Hashable], Hashable | None],
        first_key: Hashable | None = None,
    ) -> None:
        self.bases, self.chip, self.seeds_of, self.next_key = list(bases), chip, seeds_of, next_key
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chip-prefetch")
        self._pending: dict[Hashable, Future] = {}
        cuda = [b.device for b in self.bases if b.device.type == "cuda"]
        self._stream = torch.cuda.Stream(cuda[0]) if cuda else None
        if first_key is not None:
            self._submit(first_key)

    def _prepare(self, key: Hashable) -> _Ready:
        seeds = self.seeds_of(key)
        out, event = [], None
        for base in self.bases:
            cpu = torch.stack([perturb_codes(base.qw_cpu, s, self.chip) for s in seeds])
            if base.device.type == "cuda":
                with torch.cuda.stream(self._stream):
                    out.append(cpu.pin_memory().to(base.device, non_blocking=True))
            else:
                out.append(cpu)
        if self._stream is not None:
            event = torch.cuda.Event()
            event.record(self._stream)
        return _Ready(out, event)

    def _submit(self, key: Hashable) -> None:
        if key is not None and key not in self._pending:
            self._pending[key] = self._pool.submit(self._prepare, key)

    def get(self, key: Hashable) -> list[torch.Tensor]:
        """The codes of ``key`` (waits if not ready yet) and a head start on the next key's."""
        self._submit(key)
        fut = self._pending.pop(key)
        for stale in [k for k in self._pending if k != self.next_key(key)]:
            self._pending.pop(stale).cancel()  # a resumed or skipped sequence: drop what is not needed
        self._submit(self.next_key(key))
        return fut.result().wait()

    def close(self) -> None:
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ChipPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
