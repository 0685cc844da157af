"""Tokens with Meaning (Bayram et al. 2025, arXiv:2508.14292, P45): the hybrid rule-plus-BPE
tokenizer (`data/hybrid_tokenizer.py`) against plain byte-level BPE (`data/code.py`) of the same
vocabulary size, both trained on the standard library's training files.

Figure 1, compression on the held-out files (whole files): tokens per UTF-8 byte, tokens per
identifier occurrence (tokens whose first non-blank character lies in a NAME that is not a keyword),
and the share of tokens that cross a rule boundary (blank / punctuation / word part / camelCase edge).
Figure 2, a small MLM (`MaskedTokenModeling`, 15% random tokens hidden, BERT's 80/10/10, the one
`Trainer`) on chunks of each tokenisation, equal steps, batch, width and window (in tokens), 3 seeds;
scored on the first --eval-chunks held-out chunks with 15% hidden (two fixed draws): masked-token
accuracy (argmax) and bits per byte (the hidden tokens' cross-entropy in bits over the UTF-8 bytes
they write; markers write none), which compares across tokenisations where accuracy does not.

    .venv/bin/python benchmarks/hybrid_tokenizer.py                    # 3 seeds; runs/hybrid_tokenizer/table.md
    .venv/bin/python benchmarks/hybrid_tokenizer.py --seeds 0 --steps 50

Tokenizers and runs are kept under --runs and reused (a run's result.json), so it resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe
from spread import mean_std as ms
from spread import signed

from unmask.data import code
from unmask.data import hybrid_tokenizer as hy
from unmask.masking import BertCorruption, RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.train.trainer import TrainConfig, fit

KINDS = ("bpe", "hybrid")


def corpus(kind: str, args) -> code.CodeCorpus:
    path = args.runs / f"{kind}-{args.vocab}.json"
    if kind == "bpe":
        return code.load_corpus(args.length, args.vocab, tokenizer_path=path)
    return hy.load_hybrid_corpus(args.length, args.vocab, tokenizer_path=path)


def token_bytes(tokenizer) -> torch.Tensor:
    """Long[V]: the UTF-8 bytes each id writes (the hybrid's markers: 0)."""
    if isinstance(tokenizer, hy.HybridTokenizer):
        return torch.tensor([len(b) for b in tokenizer.token_bytes])
    to_byte = {c: b for b, c in hy.byte_alphabet().items()}
    vocab = tokenizer.tokenizer.get_vocab()
    out = torch.zeros(tokenizer.vocab_size, dtype=torch.long)
    for t, i in vocab.items():
        out[i] = len(t.encode()) if t in code.SPECIAL else len(bytes(to_byte[c] for c in t))
    return out


def compression(kind: str, tokenizer, root: Path, files) -> dict:
    """The boundaries counted are rules 1-3's (no roots, so no affix edges), the same for both."""
    tokens = nbytes = ident_tokens = idents = crossing = 0
    for rel in files:
        text = code.read_source(root / rel)
        if text is None:
            continue
        ids, offsets = tokenizer.encode_with_offsets(text)
        tokens += len(ids)
        nbytes += len(text.encode())
        found = code.python_groups(text)
        if found is not None:
            _, entities = code.token_groups(text, offsets)
            ident_tokens += int((entities >= 0).sum())
            group, ident = found
            idents += len(set(group[ident].tolist()))
        piece_of = [-1] * len(text)
        for k, (a, b) in enumerate(hy.rule_pieces(text)):
            piece_of[a:b] = [k] * (b - a)
        crossing += sum(len(set(piece_of[a:b])) > 1 for a, b in offsets)
    return {"kind": kind, "tokens_per_byte": tokens / nbytes, "tokens_per_identifier": ident_tokens / idents,
            "crossing_share": crossing / tokens, "heldout_bytes": nbytes, "heldout_tokens": tokens}


def build(kind: str, seed: int, args) -> MaskedTokenModeling:
    torch.manual_seed(seed)
    cfg = ModelConfig(args.vocab, code.layout(args.length), dim=args.dim, depth=args.depth, heads=args.heads)
    return MaskedTokenModeling(MaskedTokenModel(cfg), RandomMask(), ratio=0.15,
                               corruption=BertCorruption(random_range=(len(code.SPECIAL), args.vocab)))


@torch.no_grad()
def score(model, tokens: torch.Tensor, lengths: torch.Tensor, draws: int = 2, batch: int = 128) -> dict:
    """Masked-token accuracy and bits per byte over `draws` fixed 15% masks of every chunk."""
    g = torch.Generator().manual_seed(1234)
    model.eval()
    hits = count = 0
    bits = nbytes = 0.0
    for _ in range(draws):
        for x in tokens.split(batch):  # [b, L]
            mask = RandomMask()(model.config.layout, x.shape[0], ratio=0.15, generator=g)
            logits = model(x.masked_fill(mask, model.mask_id), where=mask)  # [M, V]
            target = x[mask]
            hits += int((logits.argmax(-1) == target).sum())
            count += len(target)
            bits += float(F.cross_entropy(logits.float(), target, reduction="sum")) / math.log(2)
            nbytes += float(lengths[target].sum())
    return {"accuracy": hits / count, "bits_per_byte": bits / nbytes, "bits_per_token": bits / count}


def run_one(kind: str, seed: int, args, data: code.CodeCorpus) -> dict:
    folder = args.runs / f"{kind}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build(kind, seed, args)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": data.train.tokens}, cfg, folder, {"kind": kind, "seed": seed, **{
        k: v for k, v in vars(args).items() if k not in ("runs", "seeds")}}, progress=False)
    cpu_s = time.process_time() - c0
    held = data.test.tokens[: args.eval_chunks]
    result = {"kind": kind, "seed": seed, "train_cpu_s": cpu_s, "train_chunks": len(data.train),
              **score(objective.model, held, token_bytes(data.tokenizer))}
    done.write_text(json.dumps(result, indent=1))
    print(f"{kind:6s} seed {seed}: accuracy {result['accuracy']:.3f}  bits/byte {result['bits_per_byte']:.3f}  "
          f"{cpu_s:.0f} CPU s", flush=True)
    return result


def table(comp: dict, results: dict, args) -> str:
    bpe, hyb = results["bpe"], results["hybrid"]
    lines = [
        f"Hybrid rule+BPE tokenizer vs byte-level BPE, both {args.vocab} tokens, trained on the standard "
        f"library's training files; held-out: {comp['bpe']['heldout_bytes']:,} bytes of held-out files.",
        "",
        "| tokenizer | tokens / byte | tokens / identifier | tokens crossing a rule boundary |",
        "|---|---|---|---|",
    ]
    for kind in KINDS:
        c = comp[kind]
        lines.append(f"| {kind} | {c['tokens_per_byte']:.3f} | {c['tokens_per_identifier']:.2f} | "
                     f"{100 * c['crossing_share']:.1f}% |")
    lines += [
        "",
        f"MLM (width {args.dim}, depth {args.depth}, windows of {args.length} tokens, {args.steps} steps, batch "
        f"{args.batch}, lr {args.lr}, seeds {', '.join(map(str, args.seeds))}), first {args.eval_chunks} held-out "
        "chunks, 15% hidden, two fixed masks:",
        "",
        "| tokenizer | masked-token accuracy | bits per byte (hidden) | bits per token (hidden) | training chunks |",
        "|---|---|---|---|---|",
    ]
    for kind, res in (("bpe", bpe), ("hybrid", hyb)):
        lines.append(f"| {kind} | {ms([r['accuracy'] for r in res])} | {ms([r['bits_per_byte'] for r in res])} | "
                     f"{ms([r['bits_per_token'] for r in res])} | {res[0]['train_chunks']:,} |")
    d_acc = [h["accuracy"] - b["accuracy"] for h, b in zip(hyb, bpe, strict=True)]
    d_bpb = [h["bits_per_byte"] - b["bits_per_byte"] for h, b in zip(hyb, bpe, strict=True)]
    lines += [
        "",
        f"Paired deltas per seed, hybrid - BPE: accuracy {signed(d_acc)} (mean {ms(d_acc, sign='+')}); "
        f"bits per byte {signed(d_bpb)} (mean {ms(d_bpb, sign='+')}; lower is better).",
        f"Training CPU seconds per run (one thread): BPE {ms([r['train_cpu_s'] for r in bpe], '.0f')}, hybrid "
        f"{ms([r['train_cpu_s'] for r in hyb], '.0f')}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--eval-chunks", type=int, default=256)
    p.add_argument("--runs", type=Path, default=Path("runs/hybrid_tokenizer"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    comp, results = {}, {}
    for kind in KINDS:
        data = corpus(kind, args)
        done = args.runs / f"compression-{kind}-{args.vocab}.json"
        if not done.exists():
            files = [f for f in code.stdlib_files() if code.split_of(f) == "test"]
            done.write_text(json.dumps(compression(kind, data.tokenizer, data.root, files), indent=1))
        comp[kind] = json.loads(done.read_text())
        results[kind] = [run_one(kind, s, args, data) for s in args.seeds]
    text = table(comp, results, args)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
