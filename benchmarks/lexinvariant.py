"""Lexinvariant LM (Huang et al. 2023, arXiv:2305.16349) against a standard LM with the same body
(`nn.CausalTokenModel`: learned token embeddings and output layer), same steps, batch, learning rate
and width, trained on the same plain English (pydoc topics, 27 characters; `data/topic_chars.py`);
3 seeds. Figure: next-character accuracy and bits per character on held-out windows, plain and
enciphered by a random substitution of the 27 ids per window (one fixed set of keys for every model),
by context position: the lexinvariant LM must decipher in context, the standard LM has never seen a
cipher. Reference row: the in-context rule "predict the id seen most often so far" (no training).

    .venv/bin/python benchmarks/lexinvariant.py                   # 3 seeds; writes runs/lexinvariant/table.md
    .venv/bin/python benchmarks/lexinvariant.py --seeds 0 --steps 50

Both train with the one `Trainer` (`train/trainer.py`). Runs are kept under --runs (default
runs/lexinvariant/METHOD-sSEED) and reused when their result.json exists, so an interrupted
comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms
from spread import signed

from unmask.data.topic_chars import VOCAB_SIZE, layout, load_topic_chars, substitution_cipher
from unmask.nn.causal import CausalTokenModel
from unmask.nn.lexinvariant import LexinvariantLM
from unmask.nn.masked_model import ModelConfig
from unmask.objectives.autoregressive import NextTokenPrediction
from unmask.objectives.lexinvariant import LexinvariantNextToken
from unmask.train.trainer import TrainConfig, fit

METHODS = ("standard", "lexinvariant")
CIPHER_SEED, TABLE_SEED = 1234, 4321  # the held-out keys, and the lexinvariant LM's evaluation tables


def buckets(n: int) -> list[tuple[int, int]]:
    """Context positions [0, 8), [8, 16), [16, 32), ... up to n."""
    edges = [0, 8] + [2**k for k in range(4, 31) if 2**k < n] + [n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def build(method: str, seed: int, args) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation
    cfg = ModelConfig(vocab_size=VOCAB_SIZE, layout=layout(args.length), dim=args.dim, depth=args.depth, heads=4)
    if method == "standard":
        return NextTokenPrediction(CausalTokenModel(cfg))
    return LexinvariantNextToken(LexinvariantLM(cfg, std=args.std))


@torch.no_grad()
def per_position(objective: torch.nn.Module, tokens: torch.Tensor, batch: int = 64) -> dict[str, list[float]]:
    """Accuracy and NLL (bits) of the next id at each position, averaged over the windows."""
    objective.eval()
    gen = torch.Generator().manual_seed(TABLE_SEED)
    hits, bits = [], []
    for chunk in tokens.split(batch):
        inputs = objective.inputs(chunk)
        if isinstance(objective, LexinvariantNextToken):
            logits = objective.model(inputs, generator=gen)  # [b, N, V]
        else:
            logits = objective.model(inputs)
        logp = torch.log_softmax(logits.float(), -1)
        hits.append((logits.argmax(-1) == chunk).float())
        bits.append(-logp.gather(2, chunk[..., None])[..., 0] / math.log(2))
    return {"accuracy": torch.cat(hits).mean(0).tolist(), "bits": torch.cat(bits).mean(0).tolist()}


def most_frequent_so_far(tokens: torch.Tensor) -> list[float]:
    """Accuracy per position of predicting the id seen most often before it (ties: the lowest id;
    position 0: id 0)."""
    counts = torch.zeros(tokens.shape[0], VOCAB_SIZE)
    hits = []
    for i in range(tokens.shape[1]):
        hits.append((counts.argmax(1) == tokens[:, i]).float().mean().item())
        counts[torch.arange(tokens.shape[0]), tokens[:, i]] += 1
    return hits


def run_one(method: str, seed: int, args, data) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    train, plain, cipher = data
    objective = build(method, seed, args)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": train}, cfg, folder, {"method": method, **vars(args) | {"runs": str(args.runs)}},
        progress=False)
    cpu_s = time.process_time() - c0
    result = {"method": method, "seed": seed, "train_cpu_s": cpu_s,
              "plain": per_position(objective, plain), "cipher": per_position(objective, cipher)}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:12s} seed {seed}: plain acc {sum(result['plain']['accuracy']) / args.length:.3f}, "
          f"cipher acc {sum(result['cipher']['accuracy']) / args.length:.3f}  {cpu_s:.0f} CPU s", flush=True)
    return result


def mean_over(xs: list[float], lo: int, hi: int) -> float:
    return sum(xs[lo:hi]) / (hi - lo)


def table(results: dict[str, list[dict]], reference: dict[str, list[float]], args, n_test: int) -> str:
    spans = buckets(args.length)
    head = " | ".join(f"{lo}-{hi - 1}" for lo, hi in spans)
    lines = [
        f"Next-character accuracy by context position on {n_test} held-out windows of {args.length} characters "
        f"(pydoc topics, 27 ids), plain and enciphered by a random substitution per window; both LMs trained on "
        f"plain text, steps {args.steps}, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, "
        f"seeds {', '.join(map(str, args.seeds))}.",
        "",
        f"| model | text | {head} | all | bits/char |",
        "|---|---|" + "---|" * (len(spans) + 2),
    ]
    for method in METHODS:
        for text in ("plain", "cipher"):
            rs = [r[text] for r in results[method]]
            cells = [ms([mean_over(r["accuracy"], lo, hi) for r in rs]) for lo, hi in spans]
            acc = ms([mean_over(r["accuracy"], 0, args.length) for r in rs])
            bits = ms([mean_over(r["bits"], 0, args.length) for r in rs])
            lines.append(f"| {method} | {text} | {' | '.join(cells)} | {acc} | {bits} |")
    for text in ("plain", "cipher"):
        cells = [f"{mean_over(reference[text], lo, hi):.3f}" for lo, hi in spans]
        lines.append(f"| most frequent id so far (no training) | {text} | {' | '.join(cells)} | "
                     f"{mean_over(reference[text], 0, args.length):.3f} | - |")
    lex, std = results["lexinvariant"], results["standard"]
    late = spans[-1]

    def delta(text: str, lo: int, hi: int) -> list[float]:
        by_seed = {r["seed"]: mean_over(r[text]["accuracy"], lo, hi) for r in std}
        return [mean_over(r[text]["accuracy"], lo, hi) - by_seed[r["seed"]] for r in lex]

    d_cipher, d_plain = delta("cipher", *late), delta("plain", 0, args.length)
    lines += [
        "",
        f"Paired deltas per seed, lexinvariant - standard: enciphered text, positions {late[0]}-{late[1] - 1}: "
        f"{signed(d_cipher)} (mean {ms(d_cipher, sign='+')}); plain text, all positions: {signed(d_plain)} "
        f"(mean {ms(d_plain, sign='+')}).",
        f"Training CPU seconds per run (one thread): standard {ms([r['train_cpu_s'] for r in std], '.0f')}, "
        f"lexinvariant {ms([r['train_cpu_s'] for r in lex], '.0f')}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--std", type=float, default=None, help="random table entries' std; default 1/sqrt(width)")
    p.add_argument("--length", type=int, default=128, help="characters per window")
    p.add_argument("--test-windows", type=int, default=256)
    p.add_argument("--runs", type=Path, default=Path("runs/lexinvariant"))
    p.add_argument("--only", choices=METHODS, help="train and evaluate one method, print no table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    train = load_topic_chars("train", args.length)
    plain = load_topic_chars("test", args.length)[: args.test_windows]
    cipher, _ = substitution_cipher(plain, VOCAB_SIZE, generator=torch.Generator().manual_seed(CIPHER_SEED))
    results = {m: [run_one(m, s, args, (train, plain, cipher)) for s in args.seeds]
               for m in METHODS if args.only in (None, m)}
    if args.only:
        return
    reference = {"plain": most_frequent_so_far(plain), "cipher": most_frequent_so_far(cipher)}
    text = table(results, reference, args, plain.shape[0])
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
