"""Windows of a shard set (`shards.py`), read on demand: the trainer's data contract (`len(v)` and
`v[rows]`) over a token stream larger than memory, and a loader whose worker threads read the next
steps' windows while the current step computes.

`ShardWindows` cuts a split's token stream (its shards, concatenated) into non-overlapping windows
of `length` tokens at stride `length`; a window may run from one shard into the next, and the
stream's last `tokens % length` tokens are never read. `windows[rows]` reads only those windows,
from one `np.memmap` per shard opened on first use:

    windows = ShardWindows.open("shards/", "train", length=128)
    len(windows)                          # tokens // 128
    windows[torch.tensor([7, 3])]         # Long[2, 128]: stream[7*128 : 8*128], stream[3*128 : 4*128]

Reading a page of a memory-mapped file maps it into the process, and the kernel maps its neighbours
too (fault-around, 64 KiB), so those pages count in the process's resident memory until they are
unmapped. Random windows would keep adding them; like nanoGPT, which makes a new `np.memmap` every
batch for this reason, the maps are dropped and reopened once about `remap_bytes` may have been
mapped, so resident memory stays bounded whatever the number of steps. The page cache keeps the data.

The trainer draws each step's rows from (seed, step) alone and each process keeps the rows of its
own micro-batches, so under torchrun a rank reads only its own windows. `WindowLoader` wraps the
windows for one process: told which step is being read (`reading_step`, the trainer's one hook), it
asks `plan(step)` for this process's micro-batch rows of the next `ahead` steps and has each of its
`workers` threads read one contiguous share of every micro-batch (`worker_share`), so the workers
read disjoint windows that together are exactly the micro-batch. `loader[rows]` returns the read-ahead
windows when `rows` is what the plan said, and reads them on the spot otherwise: what it returns
never depends on the read-ahead. The workers are threads: a read is a copy out of the page cache
that overlaps the step's compute (torch releases the GIL), and a thread adds no memory where a
process would import torch again (about 220 MB); `ShardWindows` pickles without its maps, so a
process pool could take it all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UnmaskError
from . import code
from .shards import Shard, open_shards

FAULT_AROUND = 64 << 10  # bytes the kernel may map around each faulted page (`fault_around_bytes`)


class ShardWindows:
    """Long[len(rows), length] windows of one split's token stream, read by row number."""

    def __init__(self, shards: Sequence[Shard], dtype: np.dtype, length: int, remap_bytes: int = 16 << 20):
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        self.shards, self.dtype, self.length, self.remap_bytes = tuple(shards), np.dtype(dtype), length, remap_bytes
        self.bounds = np.concatenate([[0], np.cumsum([s.tokens for s in self.shards], dtype=np.int64)])
        self.n = int(self.bounds[-1]) // length
        self._maps: dict[int, np.memmap] = {}
        self._mapped = 0  # bytes that reads may have mapped since the maps were opened
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: str | Path, split: str, length: int, **kwargs) -> ShardWindows:
        shards = open_shards(folder)
        return cls(shards.splits[split], shards.dtype, length, **kwargs)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:  # a copy in another process opens its own maps
        state = self.__dict__.copy()
        state.update(_maps={}, _mapped=0, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _map(self, s: int) -> np.memmap:
        with self._lock:
            if s not in self._maps:
                self._maps[s] = np.memmap(self.shards[s].path, dtype=self.dtype, mode="r")
            return self._maps[s]

    def _account(self, rows: int) -> None:
        """Drop the maps once the reads since they opened may have mapped `remap_bytes`; arrays read
        from them keep their map alive until they are gone, so a reader in another thread is safe."""
        with self._lock:
            self._mapped += rows * (self.length * self.dtype.itemsize + FAULT_AROUND)
            if self._mapped > self.remap_bytes:
                self._maps, self._mapped = {}, 0

    def stream(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split's stream, across shards."""
        parts, pos = [], start
        while pos < stop:
            s = int(np.searchsorted(self.bounds, pos, side="right")) - 1
            end = min(stop, int(self.bounds[s + 1]))
            parts.append(self._map(s)[pos - self.bounds[s] : end - self.bounds[s]])
            pos = end
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def __getitem__(self, rows) -> torch.Tensor:
        """rows: Long[M] window numbers (or an int, a slice) -> Long[M, length] (an int: Long[length])."""
        if isinstance(rows, slice):
            rows = torch.arange(self.n)[rows]
        rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.ndim == 0:
            return self[rows[None]][0]
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.n):
            raise IndexError(f"window rows must lie in 0..{self.n - 1}")
        length = self.length
        starts = rows.numpy() * length  # [M] first token of each window in the stream
        out = np.empty((len(starts), length), dtype=np.int64)
        shard = np.searchsorted(self.bounds, starts, side="right") - 1
        inside = starts + length <= self.bounds[shard + 1]
        offsets = np.arange(length)
        for s in np.unique(shard[inside]):
            sel = np.flatnonzero(inside & (shard == s))
            local = starts[sel] - self.bounds[s]
            out[sel] = self._map(int(s))[local[:, None] + offsets]  # [m, length], only these windows' pages
        for i in np.flatnonzero(~inside):  # a window running into the next shard(s)
            out[i] = self.stream(int(starts[i]), int(starts[i]) + length)
        self._account(len(starts))
        return torch.from_numpy(out)


def worker_share(rows: torch.Tensor, worker: int, workers: int) -> torch.Tensor:
    """The rows worker `worker` of `workers` reads: the worker-th of `workers` contiguous, near-equal
    parts, so the shares are disjoint and, in worker order, are `rows` again."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker must lie in 0..{workers - 1}, got {worker}")
    return rows.tensor_split(workers)[worker]


@dataclass
class ReadStats:
    """What a loader read: requests answered from read-ahead (hits) or on the spot (misses), windows
    and tokens read, and the seconds its readers spent reading (summed over threads)."""
    hits: int = 0
    misses: int = 0
    windows: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class _Batch:
    rows: torch.Tensor  # Long[m]: the rows of one micro-batch
    shares: list[Future]  # each worker's windows, in worker order


class WindowLoader:
    """`windows` with read-ahead for one process. `plan(step)` gives this process's micro-batch rows
    of a step ([Long[m], ...] in the order the trainer reads them); `steps` is where training ends.
    Drop-in for the windows in the trainer's data dict: `len(loader)`, `loader[rows]`."""

    def __init__(self, windows: ShardWindows, plan: Callable[[int], list[torch.Tensor]], *, workers: int = 2,
                 ahead: int = 2, steps: int | None = None):
        if workers < 1 or ahead < 1:
            raise ValueError(f"workers and ahead must be >= 1, got {workers} and {ahead}")
        self.windows, self.plan, self.workers, self.ahead, self.steps = windows, plan, workers, ahead, steps
        self.stats = ReadStats()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="windows")
        self._ahead: dict[int, Future] = {}  # step -> Future[list[_Batch]]
        self._step = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.windows)

    def _read(self, rows: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.windows[rows]
        with self._lock:
            self.stats.seconds += time.perf_counter() - start
            self.stats.windows += len(rows)
            self.stats.tokens += out.numel()
        return out

    def _schedule(self, step: int) -> list[_Batch]:
        """Runs in a worker: the step's rows from the plan, each micro-batch's shares handed to the workers."""
        return [_Batch(rows, [self._pool.submit(self._read, worker_share(rows, w, self.workers))
                              for w in range(self.workers)]) for rows in self.plan(step)]

    def reading_step(self, step: int) -> None:
        """The trainer is about to read step `step`: forget earlier steps, read ahead to `step + ahead`."""
        self._step = step
        for k in [k for k in self._ahead if k < step]:
            del self._ahead[k]
        last = step + self.ahead if self.steps is None else min(step + self.ahead, self.steps - 1)
        for k in range(step, last + 1):
            if k not in self._ahead:
                self._ahead[k] = self._pool.submit(self._schedule, k)

    def __getitem__(self, rows) -> torch.Tensor:
        """Long[len(rows), length]: the read-ahead windows if `rows` is a micro-batch the plan gave for
        the current step, else read now."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        pending = self._ahead.get(self._step)
        if pending is not None:
            batches = pending.result()
            for i, batch in enumerate(batches):
                if batch.rows.shape == rows.shape and torch.equal(batch.rows, rows):
                    del batches[i]
                    self.stats.hits += 1
                    return torch.cat([f.result() for f in batch.shares])
        self.stats.misses += 1
        return self._read(rows)

    def close(self) -> None:
        self._ahead.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


# the code recipes' corpus over a shard set ---------------------------------------------------------
@dataclass(frozen=True)
class ShardCorpus(code.CodeCorpus):
    """A `CodeCorpus` whose training windows stay on disk (`windows`, the `train` split read by window;
    `train` itself is empty) and whose `test` holds the first windows of the held-out split, in memory.
    A window's tokens are its own words (no Python lexical ids, no identifiers) and it has no file."""
    windows: ShardWindows | None = None
    shards: Path | None = None

    def source(self, rel_path: str) -> None:
        return None  # no held-out files to fill function bodies in


def window_split(tokens: torch.Tensor) -> code.CodeSplit:
    """tokens: Long[M, L] windows -> a `CodeSplit` in which every token is a word of its own."""
    m, length = tokens.shape
    none = torch.zeros(m, dtype=torch.long)
    return code.CodeSplit(tokens, torch.arange(m * length).view(m, length), torch.full_like(tokens, -1), none,
                          none, ())


def open_corpus(folder: str | Path, tokenizer: code.CodeTokenizer, length: int, held_out: int) -> ShardCorpus:
    """The corpus of a shard set for windows of `length` tokens, `held_out` held-out windows in memory.
    A split without a single window is a one-line UnmaskError."""
    shards = open_shards(folder)
    train = ShardWindows(shards.splits["train"], shards.dtype, length)
    test = ShardWindows(shards.splits["test"], shards.dtype, length)
    for split, windows in (("train", train), ("test", test)):
        if len(windows) == 0:
            raise UnmaskError(f"the {split} split of shard set {shards.folder} holds {shards.tokens(split)} tokens, "
                              f"less than one window of data.length={length}")
    return ShardCorpus(tokenizer, window_split(train[:0]), window_split(test[: min(held_out, len(test))]),
                       shards.folder, windows=train, shards=shards.folder)
