"""SMITH (Yang et al. 2020, arXiv:2004.12297) on long standard-library files: the hierarchical
encoder pre-trained with masked words and masked sentence blocks, against the same encoder
pre-trained with masked words only (`SMITH(blocks=False)`), same steps, batch, learning rate and
width; 3 seeds. Figure: zero-shot document matching on the held-out files: each query half must find
its other half among all held-out halves by the cosine of document embeddings (MRR, recall@1).

Two pair sets: window halves (every run of 2 x 8 blocks of a held-out file cut in two: 410 pairs,
harder, as the other halves of the same file are the nearest distractors) and file halves (a file's
first half against its second half, the first 8 blocks of each: 26 pairs). Two embeddings of each
model: "document" (mean of the document encoder's outputs over the blocks) and "tokens" (mean of the
block encoder's token outputs). The headline row compares what each method trains: SMITH's document
embedding against the masked-word model's token embedding (its document encoder gets no gradient).

    .venv/bin/python benchmarks/smith_matching.py                  # 3 seeds; writes runs/smith/table.md
    .venv/bin/python benchmarks/smith_matching.py --seeds 0 --steps 50

Each method trains with the one `Trainer`; runs are kept under --runs (default runs/smith/METHOD-sSEED)
and reused when their result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms
from spread import signed

from unmask.data.long_files import load_long_files
from unmask.eval.retrieval import cosine_ranks, mrr_at, recall_at
from unmask.nn.hierarchical import HierarchicalConfig, HierarchicalEncoder
from unmask.objectives.smith import SMITH
from unmask.train.trainer import TrainConfig, fit

METHODS = {"smith": "SMITH (words + blocks)", "words": "masked words only"}
EMBEDDINGS = ("document", "tokens")
PAIRS = ("window", "file")


def build(method: str, seed: int, args) -> SMITH:
    torch.manual_seed(seed)  # the weights' initialisation
    cfg = HierarchicalConfig(args.vocab, args.block_length, args.blocks, dim=args.dim, block_depth=args.block_depth,
                             doc_depth=args.doc_depth, heads=4)
    return SMITH(HierarchicalEncoder(cfg), word_ratio=args.word_ratio, hidden_blocks=args.hidden_blocks,
                 blocks=method == "smith")


def matching(model: HierarchicalEncoder, data) -> dict[str, float]:
    model.eval()
    out = {}
    for kind, pairs in (("window", data.window_halves), ("file", data.file_halves)):
        q, a = model.embed(pairs.queries), model.embed(pairs.answers)
        for emb in EMBEDDINGS:
            ranks = cosine_ranks(q[emb], a[emb])  # [P], among all P answers
            out[f"{kind}_{emb}_mrr"] = mrr_at(ranks, k=len(ranks))
            out[f"{kind}_{emb}_recall@1"] = recall_at(ranks, 1)
    return out


def run_one(method: str, seed: int, args, data) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    random_init = matching(build(method, seed, args).model, data)
    objective = build(method, seed, args)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": data.train}, cfg, folder,
        {"method": method, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    cpu_s = time.process_time() - c0
    metrics = (folder / "metrics.csv").read_text().splitlines()
    result = {"method": method, "seed": seed, "train_cpu_s": cpu_s, **matching(objective.model, data),
              **{f"random_init_{k}": v for k, v in random_init.items()},
              "last_metrics": dict(zip(metrics[0].split(","), metrics[-1].split(","), strict=False))}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:6s} seed {seed}: window MRR document {result['window_document_mrr']:.3f} tokens "
          f"{result['window_tokens_mrr']:.3f}; file MRR document {result['file_document_mrr']:.3f} tokens "
          f"{result['file_tokens_mrr']:.3f}  {cpu_s:.0f} CPU s", flush=True)
    return result


def table(results: dict[str, list[dict]], args, data) -> str:
    n_window, n_file = len(data.window_halves.files), len(data.file_halves.files)
    lines = [
        f"SMITH vs masked words only on long stdlib files (steps {args.steps}, batch {args.batch} documents of "
        f"{args.blocks} blocks x {args.block_length} tokens, lr {args.lr}, width {args.dim}, block depth "
        f"{args.block_depth}, document depth {args.doc_depth}, word ratio {args.word_ratio}, {args.hidden_blocks} "
        f"hidden blocks per document, seeds {', '.join(map(str, args.seeds))}; {len(data.train)} training "
        f"documents). Zero-shot matching on held-out files: window halves ({n_window} pairs), file halves "
        f"({n_file} pairs).",
        "",
        "| pre-training | embedding | window MRR | window R@1 | file MRR | file R@1 |",
        "|---|---|---|---|---|---|",
    ]

    def row(name, emb, rs, prefix=""):
        cells = [ms([r[f"{prefix}{k}_{emb}_{m}"] for r in rs]) for k in PAIRS for m in ("mrr", "recall@1")]
        return f"| {name} | {emb} | " + " | ".join(cells) + " |"

    for method, name in METHODS.items():
        for emb in EMBEDDINGS:
            lines.append(row(name, emb, results[method]))
    for emb in EMBEDDINGS:
        lines.append(row("none (random init)", emb, results["words"], "random_init_"))
    smith, words = results["smith"], {r["seed"]: r for r in results["words"]}
    lines.append("")
    for kind in PAIRS:
        head = [r[f"{kind}_document_mrr"] - words[r["seed"]][f"{kind}_tokens_mrr"] for r in smith]
        same = [r[f"{kind}_tokens_mrr"] - words[r["seed"]][f"{kind}_tokens_mrr"] for r in smith]
        lines.append(f"Paired MRR deltas per seed, {kind} halves: SMITH document - masked words tokens {signed(head)} "
                     f"(mean {ms(head, sign='+')}); SMITH tokens - masked words tokens {signed(same)} "
                     f"(mean {ms(same, sign='+')}).")
    last = [r["last_metrics"] for r in smith]
    lines += [
        "",
        f"SMITH's last logged step: word loss {ms([float(m['word_loss']) for m in last])}, block loss "
        f"{ms([float(m['block_loss']) for m in last])}, block accuracy {ms([float(m['block_acc']) for m in last])} "
        f"(among {2 * args.batch} hidden blocks); masked words only: word loss "
        f"{ms([float(r['last_metrics']['word_loss']) for r in results['words']])}.",
        f"Training CPU seconds per run (one thread): SMITH {ms([r['train_cpu_s'] for r in smith], '.0f')}, "
        f"masked words {ms([r['train_cpu_s'] for r in results['words']], '.0f')}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32, help="documents per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--block-depth", type=int, default=2)
    p.add_argument("--doc-depth", type=int, default=2)
    p.add_argument("--block-length", type=int, default=32, help="tokens per block")
    p.add_argument("--blocks", type=int, default=8, help="blocks per document")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--word-ratio", type=float, default=0.15)
    p.add_argument("--hidden-blocks", type=int, default=2, help="blocks hidden per document (SMITH's default)")
    p.add_argument("--runs", type=Path, default=Path("runs/smith"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    data = load_long_files(args.block_length, args.blocks, args.vocab, tokenizer_path=args.runs / "tokenizer.json")
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in args.seeds:  # seed by seed, so a cut-short comparison is still paired
        for m in METHODS:
            results[m].append(run_one(m, seed, args, data))
    text = table(results, args, data)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
