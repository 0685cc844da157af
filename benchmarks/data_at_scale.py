"""Data larger than memory: train from token shards of over a billion tokens with two processes, and
measure what each process holds in memory and how fast windows are read against how fast a step
consumes them.

    python benchmarks/data_at_scale.py                      # 1.1e9 uint16 tokens (2.2 GB), 40 steps
    python benchmarks/data_at_scale.py --tokens 2e7 --steps 10 --keep --dir /tmp/das

What it does, in a temporary folder (deleted at the end unless --keep):
1. trains a byte-level BPE of `--vocab` tokens on a few standard-library files, and times
   `unmask prepare` on the standard library's top-level modules (real text: tokenising is the cost);
2. writes a shard set of `--tokens` synthetic token ids (documents of 1 to 64 Ki tokens, ids uniform
   over the non-special vocabulary, every 100th document held out) with `ShardWriter`: the content does
   not change how fast windows are read or steps computed;
3. reads random windows in one process, 16 per call (one process's share of a batch of 32), through
   `ShardWindows` alone and through `WindowLoader` with 2 worker threads and the trainer's own plan;
4. trains `mlm-code` on the shard set under `torchrun --standalone --nproc_per_node=2` (gloo, one
   thread per process, the recipe's default model: width 128, depth 4, windows of 128, batch 32), each
   process reporting its peak resident memory (`VmHWM`, which counts the pages of the shards mapped
   into it), the windows its loader read and the seconds its workers spent reading, and the time
   between steps.
The page cache holds the shards after step 2 (the machine has memory to spare), so reads are from
memory, not from the disk: the figures are the loader's own cost. Limits: peak resident memory under
600 MB per process, the loader at least 20x faster than a step consumes tokens.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RSS_LIMIT_MB, RATIO_LIMIT = 600, 20
TOKENIZER_FILES = ("textwrap.py", "shlex.py", "glob.py", "argparse.py", "dataclasses.py", "inspect.py")


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def make_tokenizer(folder: Path, vocab: int) -> Path:
    from unmask.data import code

    path = folder / "tokenizer.json"
    code.train_tokenizer([(code.stdlib_root() / f).read_text() for f in TOKENIZER_FILES], vocab).save(path)
    return path


def prepare_real(folder: Path, tokenizer: Path) -> str:
    """`unmask prepare` on the standard library's top-level modules: tokens per second of real text."""
    from unmask.data import code, shards

    start = time.perf_counter()
    index = shards.prepare(f"{code.stdlib_root()}/*.py", tokenizer, folder / "real", test_share=0.05, progress=False)
    seconds = time.perf_counter() - start
    mb = sum(f.stat().st_size for f in code.stdlib_root().glob("*.py")) / 1e6
    return (f"prepare (real text, {index['files']} files, {mb:.1f} MB): {index['total_tokens'] / seconds:,.0f} "
            f"tokens/s, {mb / seconds:.1f} MB/s ({torch.get_num_threads()} threads)")


def write_synthetic(out: Path, tokenizer: Path, tokens: int, vocab: int, seed: int = 0) -> float:
    """A shard set of `tokens` synthetic ids; returns the seconds it took."""
    from unmask.data import shards

    rng = np.random.default_rng(seed)
    start, written, doc = time.perf_counter(), 0, 0
    with shards.ShardWriter(out, vocab_size=vocab, separator_id=0, tokenizer=tokenizer) as writer:
        while written < tokens:
            n = int(rng.integers(1, 1 << 16))
            writer.add("test" if doc % 100 == 99 else "train", rng.integers(10, vocab, n, dtype=np.uint16))
            written, doc = written + n + 1, doc + 1
        writer.close()
    return time.perf_counter() - start


def read_speed(folder: Path, seconds: float = 3.0) -> list[str]:
    """Tokens per second of random windows read in this process: windows alone, then the loader."""
    from unmask.data.windows import ShardWindows, WindowLoader
    from unmask.recipes.code_base import step_rows
    from unmask.train import TrainConfig

    windows = ShardWindows.open(folder, "train", 128)
    g = torch.Generator().manual_seed(0)
    start, read = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        read += windows[torch.randint(0, len(windows), (16,), generator=g)].numel()
    alone = read / (time.perf_counter() - start)
    cfg = TrainConfig(batch_size=32, seed=0)
    loader = WindowLoader(windows, lambda step: step_rows(len(windows), cfg, step, world=2, rank=0), workers=2)
    start, read, step = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        loader.reading_step(step)
        read += loader[step_rows(len(windows), cfg, step, world=2, rank=0)[0]].numel()
        step += 1
    through = read / (time.perf_counter() - start)
    loader.close()
    return [f"read alone ({len(windows):,} windows of 128, 16 per call, 1 thread): {alone:,.0f} tokens/s",
            f"read through WindowLoader (2 workers, the trainer's plan, {step} steps): {through:,.0f} tokens/s, "
            f"{loader.stats.hits} of {step} read ahead"]


def train_worker(args) -> None:
    """Runs in each torchrun process: train mlm-code on the shards, then report this process."""
    from unmask.cli import main
    from unmask.recipes import code_base

    rank, report = int(os.environ.get("RANK", 0)), {}
    stamps: list[float] = []
    resident: list[float] = []  # VmRSS at the start of each step
    made = code_base.CodeRecipe.training_data

    def training_data(self, run):
        data = made(self, run)
        loader = report["loader"] = data["tokens"]
        seen = loader.reading_step

        def reading_step(step):
            stamps.append(time.perf_counter())
            resident.append(rss_mb("VmRSS"))
            seen(step)

        loader.reading_step = reading_step
        return data

    code_base.CodeRecipe.training_data = training_data

    def write():
        loader = report.get("loader")
        s = loader.stats if loader is not None else None
        steps = np.diff(stamps[1:])  # the first step builds and warms up
        Path(args.report, f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "peak_rss_mb": rss_mb(), "rss_by_step": resident[:: max(len(resident) // 8, 1)],
            "windows": s and s.windows, "tokens": s and s.tokens,
            "read_seconds": s and s.seconds, "hits": s and s.hits, "misses": s and s.misses,
            "step_seconds": float(np.median(steps)) if len(steps) else None, "steps_timed": len(steps)}))

    atexit.register(write)  # ranks other than 0 leave through SystemExit when training ends
    code = main(["train", "mlm-code", "--out", str(args.train_out), "--no-progress", f"data.source={args.shards}",
                 f"data.vocab_size={args.vocab}", f"train.steps={args.steps}", "train.log_every=10",
                 "train.warmup=5", "eval.chunks=64"])
    if code:
        raise SystemExit(code)


def run_training(shards_dir: Path, work: Path, args) -> list[dict]:
    report = work / "report"
    report.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           "--train-worker", "--shards", str(shards_dir), "--train-out", str(work / "run"), "--report", str(report),
           "--steps", str(args.steps), "--vocab", str(args.vocab)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s (start-up and evaluation included)")
    return [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=float, default=1.1e9, help="synthetic tokens to write")
    p.add_argument("--steps", type=int, default=40, help="training steps")
    p.add_argument("--vocab", type=int, default=2048, help="BPE tokens")
    p.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--train-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_worker:
        train_worker(args)
        return
    from machine import describe

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(describe())
    work = args.dir or Path(tempfile.mkdtemp(prefix="data_at_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = make_tokenizer(work, args.vocab)
        print(prepare_real(work, tokenizer))
        folder = work / "shards"
        seconds = write_synthetic(folder, tokenizer, int(args.tokens), args.vocab)
        index = json.loads((folder / "index.json").read_text())
        size = sum(f.stat().st_size for f in folder.glob("*.bin"))
        print(f"wrote {index['total_tokens']:,} tokens ({size / 1e9:.2f} GB, {index['dtype']}, "
              f"{sum(len(s['shards']) for s in index['splits'].values())} shards) in {seconds:.0f} s")
        for line in read_speed(folder):
            print(line)
        ranks = run_training(folder, work, args)
        step_tokens = 32 * 128
        for r in ranks:
            loader = r["tokens"] / r["read_seconds"]
            consumed = step_tokens / 2 / r["step_seconds"]  # this process's half of each step
            print(f"rank {r['rank']}: peak RSS {r['peak_rss_mb']:.0f} MB (limit {RSS_LIMIT_MB}); loader "
                  f"{loader:,.0f} tokens/s ({r['windows']} windows, {r['hits']} micro-batches read ahead, "
                  f"{r['misses']} on the spot); step {r['step_seconds'] * 1e3:.0f} ms = {consumed:,.0f} tokens/s "
                  f"consumed; ratio {loader / consumed:,.0f}x (limit {RATIO_LIMIT}x)")
            print(f"  rank {r['rank']} resident MB at steps 0, {args.steps // 8}, ...: "
                  f"{' '.join(f'{x:.0f}' for x in r['rss_by_step'])}")
        ok = all(r["peak_rss_mb"] < RSS_LIMIT_MB and r["tokens"] / r["read_seconds"] >= RATIO_LIMIT * step_tokens
                 / 2 / r["step_seconds"] for r in ranks)
        print("within limits" if ok else "OUT OF LIMITS")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
