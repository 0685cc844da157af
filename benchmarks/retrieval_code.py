"""DupMAE / RetroMAE v2 (Xiao & Liu 2022, arXiv:2211.08769; P27) on code: zero-shot retrieval of a
function's body from its docstring on the held-out files, after pre-training on the training files'
docstrings and bodies (as separate texts), against a plain MLM encoder with the same masking, steps,
batch, learning rate and width; 3 seeds.

Methods (`objectives/dupmae.py`): `dupmae` (encoder MLM + [CLS] decoding + bag-of-words), `retromae`
(the same without the bag-of-words term, bow_weight 0) and `mlm` (plain_mlm: the encoder MLM term
alone). Retrieval: the held-out docstrings are the queries, their bodies the documents; cosine
similarity of the [CLS] output and, separately, of the mean of the ordinary tokens' outputs;
MRR@10 and recall@1 (`eval/retrieval.py`). The encoder at initialisation is scored too.

    .venv/bin/python benchmarks/retrieval_code.py                    # 3 seeds; writes runs/retrieval_code/table.md
    .venv/bin/python benchmarks/retrieval_code.py --seeds 0 --steps 50

Each method trains with the one `Trainer` (`train/trainer.py`). Runs are kept under --runs (default
runs/retrieval_code/METHOD-sSEED) and reused when their result.json exists, so an interrupted
comparison resumes; the BPE tokenizer (trained on the training pairs' texts) is kept there too.
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

from unmask.data.code import CodeTokenizer, train_tokenizer
from unmask.data.docstrings import FIRST_ORDINARY, encode_texts, layout, load_pairs, special_ids
from unmask.eval.retrieval import cosine_ranks, mrr_at, recall_at
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.dupmae import DupMAE
from unmask.train.checkpoint import find_checkpoint, load_checkpoint
from unmask.train.trainer import TrainConfig, fit

METHODS = ("dupmae", "mlm", "retromae")  # the claim first, the ablation last
POOLS = ("cls", "mean")


def data(args) -> dict:
    pairs = load_pairs()
    path = args.runs / "tokenizer.json"
    train_texts = [t for p in pairs.train for t in (p.docstring, p.body)]
    if path.exists():
        tok = CodeTokenizer.load(path)
    else:
        tok = train_tokenizer(train_texts, args.vocab)
        path.parent.mkdir(parents=True, exist_ok=True)
        tok.save(path)
    return {"tokenizer": tok, "train": encode_texts(tok, train_texts, args.length),
            "queries": encode_texts(tok, [p.docstring for p in pairs.test], args.length),
            "documents": encode_texts(tok, [p.body for p in pairs.test], args.length),
            "pairs": (len(pairs.train), len(pairs.test))}


def build(method: str, seed: int, args, tok: CodeTokenizer) -> DupMAE:
    torch.manual_seed(seed)  # the same encoder initialisation for every method of a seed
    cfg = ModelConfig(tok.vocab_size, layout(args.length), dim=args.dim, depth=args.depth, heads=args.heads)
    _, pad = special_ids(tok)
    return DupMAE(MaskedTokenModel(cfg), pad_id=pad, first_ordinary=FIRST_ORDINARY, encoder_ratio=args.encoder_ratio,
                  decoder_ratio=args.decoder_ratio, bow_weight=0.0 if method == "retromae" else args.bow_weight,
                  plain_mlm=method == "mlm")


@torch.no_grad()
def embeddings(objective: DupMAE, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"cls": Float[M, D], "mean": Float[M, D] over the ordinary tokens} of the unmasked texts."""
    objective.eval()
    out = {p: [] for p in POOLS}
    for chunk in tokens.split(256):
        h = objective.encode(chunk)  # [b, N, D]
        ordinary = (chunk >= FIRST_ORDINARY).float()[..., None]  # [b, N, 1]
        out["cls"].append(h[:, 0])
        out["mean"].append((h * ordinary).sum(1) / ordinary.sum(1).clamp(min=1))
    return {p: torch.cat(v) for p, v in out.items()}


def retrieval(objective: DupMAE, d: dict) -> dict[str, float]:
    q, docs = embeddings(objective, d["queries"]), embeddings(objective, d["documents"])
    out = {}
    for p in POOLS:
        ranks = cosine_ranks(q[p], docs[p])
        out |= {f"{p}_mrr10": mrr_at(ranks, 10), f"{p}_r1": recall_at(ranks, 1), f"{p}_r10": recall_at(ranks, 10)}
    return out


def lexical(d: dict) -> dict[str, float]:
    """No network: each text as the counts of its ordinary token ids, ranked by cosine."""
    v = d["tokenizer"].vocab_size

    def counts(tokens: torch.Tensor) -> torch.Tensor:  # [M, V]
        return torch.zeros(tokens.shape[0], v).scatter_add_(1, tokens, (tokens >= FIRST_ORDINARY).float())

    ranks = cosine_ranks(counts(d["queries"]), counts(d["documents"]))
    return {"mrr10": mrr_at(ranks, 10), "r1": recall_at(ranks, 1)}


def run_one(method: str, seed: int, args, d: dict) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build(method, seed, args, d["tokenizer"])
    init = retrieval(objective, d)
    objective.train()
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": d["train"]}, cfg, folder, {"method": method, **vars(args) | {"runs": str(args.runs)}},
        progress=False)
    cpu_s = time.process_time() - c0
    result = {"method": method, "seed": seed, "train_cpu_s": cpu_s, **retrieval(objective, d),
              **{f"init_{k}": v for k, v in init.items()}}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:8s} seed {seed}: [CLS] MRR@10 {result['cls_mrr10']:.3f} R@1 {result['cls_r1']:.3f}  "
          f"mean MRR@10 {result['mean_mrr10']:.3f} R@1 {result['mean_r1']:.3f}  {cpu_s:.0f} CPU s", flush=True)
    return result


def centred_one(method: str, seed: int, args, d: dict) -> dict:
    """Diagnostic, not the figure: the same ranking after subtracting the mean query embedding from
    the queries and the mean document embedding from the documents (no pairs are read). Cosine on
    raw outputs cannot separate texts whose embeddings all share one large common direction."""
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "centred.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build(method, seed, args, d["tokenizer"])
    tensors, _, _ = load_checkpoint(find_checkpoint(folder))
    objective.load_state_dict(tensors.get("ema", tensors["model"]))
    out = {}
    for name, obj in (("trained", objective), ("init", build(method, seed, args, d["tokenizer"]))):
        q, docs = embeddings(obj, d["queries"]), embeddings(obj, d["documents"])
        for p in POOLS:
            ranks = cosine_ranks(q[p] - q[p].mean(0), docs[p] - docs[p].mean(0))
            out[f"{name}_{p}_mrr10"] = mrr_at(ranks, 10)
    done.write_text(json.dumps(out, indent=1))
    return out


def table(results: dict[str, list[dict]], args, d: dict) -> str:
    n_train, n_test = d["pairs"]
    lines = [
        f"Docstring -> body retrieval on {n_test} held-out pairs (pre-training on the {2 * n_train} docstrings and "
        f"bodies of {n_train} training pairs; steps {args.steps}, batch {args.batch}, lr {args.lr}, width {args.dim}, "
        f"depth {args.depth}, {args.length} tokens, BPE {args.vocab}; encoder ratio {args.encoder_ratio}, decoder "
        f"ratio {args.decoder_ratio}, BoW weight {args.bow_weight}; seeds {', '.join(map(str, args.seeds))}).",
        "",
        "| encoder | [CLS] MRR@10 | [CLS] R@1 | mean-pooled MRR@10 | mean-pooled R@1 | train CPU s |",
        "|---|---|---|---|---|---|",
    ]
    names = {"dupmae": "DupMAE (MLM + [CLS] decoder + BoW)", "retromae": "RetroMAE (MLM + [CLS] decoder)",
             "mlm": "plain MLM (same masking)"}
    for m, res in results.items():
        lines.append(f"| {names[m]} | {ms([r['cls_mrr10'] for r in res])} | {ms([r['cls_r1'] for r in res])} | "
                     f"{ms([r['mean_mrr10'] for r in res])} | {ms([r['mean_r1'] for r in res])} | "
                     f"{ms([r['train_cpu_s'] for r in res], '.0f')} |")
    first = next(iter(results.values()))
    lines.append(f"| same encoder at initialisation | {ms([r['init_cls_mrr10'] for r in first])} | "
                 f"{ms([r['init_cls_r1'] for r in first])} | {ms([r['init_mean_mrr10'] for r in first])} | "
                 f"{ms([r['init_mean_r1'] for r in first])} | - |")
    chance_mrr = sum(1 / r for r in range(1, 11)) / n_test  # a uniformly random ranking, in expectation
    lines.append(f"| random ranking (expected) | {chance_mrr:.3f} | {1 / n_test:.3f} | {chance_mrr:.3f} | "
                 f"{1 / n_test:.3f} | - |")
    lex = lexical(d)
    lines.append(f"| bag of token ids, no network (reference) | {lex['mrr10']:.3f} | {lex['r1']:.3f} | - | - | - |")
    if "mlm" in results:
        base = {r["seed"]: r for r in results["mlm"]}
        lines.append("")
        for m in (m for m in results if m != "mlm"):
            for p in POOLS:
                delta = [r[f"{p}_mrr10"] - base[r["seed"]][f"{p}_mrr10"] for r in results[m] if r["seed"] in base]
                lines.append(f"Paired {p} MRR@10 delta per seed, {m} - mlm: {signed(delta)} "
                             f"(mean {ms(delta, sign='+')}).")
    centred = {m: [centred_one(m, r["seed"], args, d) for r in res] for m, res in results.items()}
    lines += ["", "Diagnostic (not the figure): MRR@10 with each side's mean embedding subtracted before the cosine.",
              "", "| encoder | [CLS] centred | mean-pooled centred | at init: [CLS] | at init: mean-pooled |",
              "|---|---|---|---|---|"]
    for m, res in centred.items():
        lines.append(f"| {names[m]} | {ms([r['trained_cls_mrr10'] for r in res])} | "
                     f"{ms([r['trained_mean_mrr10'] for r in res])} | {ms([r['init_cls_mrr10'] for r in res])} | "
                     f"{ms([r['init_mean_mrr10'] for r in res])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--encoder-ratio", type=float, default=0.3)
    parser.add_argument("--decoder-ratio", type=float, default=0.5)
    parser.add_argument("--bow-weight", type=float, default=1.0)
    parser.add_argument("--runs", type=Path, default=Path("runs/retrieval_code"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    d = data(args)
    results = {m: [run_one(m, s, args, d) for s in args.seeds] for m in args.methods}
    text = table(results, args, d)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
