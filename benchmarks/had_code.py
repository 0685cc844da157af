"""HAD (Yang et al. 2025, arXiv:2505.20836, P35) across tokenisations that do not align, on the standard
library's code: a byte-level student distils a BPE masked LM (the teacher) through grouped masking
(whole BPE tokens' bytes hidden, visible groups' mean features aligned to the teacher's, hidden bytes
rebuilt; `objectives/had.py`), against the same student trained as a byte MLM alone (the same grouped
masks, steps, batch, learning rate and width: HAD with `distill_weight=0`); 3 seeds.

Figure: held-out masked-byte accuracy (grouped masks at 15% of the BPE tokens, the same masks for
every run) and a linear probe of frozen, mean-pooled byte features predicting a chunk's top-level
package (`data/code.py` `package_of`; packages with enough chunks in both splits, split by file).

    .venv/bin/python benchmarks/had_code.py                    # 3 seeds; writes runs/had-code/table.md
    .venv/bin/python benchmarks/had_code.py --seeds 0 --steps 50 --teacher-steps 50 --runs runs/had-try

Chunks are `--length` BPE tokens (a BPE of `--vocab` tokens trained on the training files); their
bytes (`data/token_alignment.py`) are padded to `--bytes`, and chunks with more bytes are left out of
both splits. The teacher (a `MaskedTokenModel` over the BPE tokens, BERT's 80/10/10 corruption) is
trained once, with seed 0, before the students; every model trains with the one `Trainer`. Runs are
kept under --runs (teacher/, METHOD-sSEED/) and reused when their result.json exists.
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

from unmask.data.code import SPECIAL, CodeCorpus, CodeSplit, load_corpus
from unmask.data.token_alignment import BYTE_PAD, BYTE_VOCAB, TokenBytes
from unmask.eval.code import hidden_accuracy, probe_labels
from unmask.eval.probe import linear_probe
from unmask.layout import Layout
from unmask.masking import BertCorruption, RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.objectives.had import HAD, group_mask
from unmask.train.checkpoint import find_checkpoint, load_checkpoint
from unmask.train.trainer import TrainConfig, fit

METHODS = {"had": {}, "byte-mlm": {"distill_weight": 0.0}}
EVAL_SEED = 1234  # the held-out masks, the same for every run


# data ---------------------------------------------------------------------------------------------
def select(split: CodeSplit, keep: torch.Tensor) -> CodeSplit:
    return CodeSplit(split.tokens[keep], split.word_ids[keep], split.entity_ids[keep], split.file_index[keep],
                     split.start[keep], split.files)


def load(args) -> tuple[CodeCorpus, dict, dict]:
    """The corpus restricted to chunks whose bytes fit, and each split's byte rows."""
    corpus = load_corpus(length=args.length, vocab_size=args.vocab, tokenizer_path=args.runs / "tokenizer.json")
    table = TokenBytes.of(corpus.tokenizer)
    splits, rows = {}, {}
    for name in ("train", "test"):
        split = getattr(corpus, name)
        fits = table.chunks(split.tokens, args.bytes).fits
        splits[name] = select(split, fits)
        chunks = table.chunks(splits[name].tokens, args.bytes)
        rows[name] = {"bytes": chunks.bytes, "groups": chunks.groups, "tokens": splits[name].tokens}
        print(f"{name}: {int(fits.sum())} of {len(fits)} chunks fit in {args.bytes} bytes", flush=True)
    return CodeCorpus(corpus.tokenizer, splits["train"], splits["test"], corpus.root), rows["train"], rows["test"]


# models -------------------------------------------------------------------------------------------
def teacher_model(args) -> MaskedTokenModel:
    return MaskedTokenModel(ModelConfig(args.vocab, Layout.seq(args.length, name="code"), dim=args.teacher_dim,
                                        depth=args.teacher_depth, heads=4))


def student_model(args) -> MaskedTokenModel:
    return MaskedTokenModel(ModelConfig(BYTE_VOCAB, Layout.seq(args.bytes, name="bytes"), dim=args.dim,
                                        depth=args.depth, heads=4, segment_vocab={"bytes": (0, 256)}))


def weights_of(folder: Path) -> dict:
    tensors, _, _ = load_checkpoint(find_checkpoint(folder))
    return tensors["model"]


def train_teacher(args, corpus: CodeCorpus) -> tuple[MaskedTokenModel, dict]:
    folder = args.runs / "teacher"
    done = folder / "result.json"
    torch.manual_seed(0)
    objective = MaskedTokenModeling(teacher_model(args), RandomMask(), ratio=0.15,
                                    corruption=BertCorruption(random_range=(len(SPECIAL), args.vocab)))
    if done.exists():
        objective.load_state_dict(weights_of(folder))
        return objective.model, json.loads(done.read_text())
    cfg = TrainConfig(steps=args.teacher_steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=0,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": corpus.train.tokens}, cfg, folder, {"role": "teacher", **settings(args)}, progress=False)
    model = objective.model.eval()
    held = corpus.test.head(args.eval_chunks)
    result = {"train_cpu_s": time.process_time() - c0,
              "token_accuracy": hidden_accuracy(model, held, RandomMask(), 0.15, EVAL_SEED),
              **probe(lambda tokens: model.features(tokens), corpus, lambda tokens: None)}
    done.write_text(json.dumps(result, indent=1))
    print(f"teacher: held-out BPE-token accuracy {result['token_accuracy']:.3f}, package probe "
          f"{result['probe']:.3f}, {result['train_cpu_s']:.0f} CPU s", flush=True)
    return model, result


# evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def byte_accuracy(student: MaskedTokenModel, rows: dict, ratio: float, n: int, batch: int = 128) -> float:
    """Share of hidden bytes predicted exactly (argmax), grouped masks drawn with EVAL_SEED."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    student.eval()
    correct = total = 0
    for start in range(0, min(n, len(rows["bytes"])), batch):
        data = rows["bytes"][start : min(start + batch, n)]
        groups = rows["groups"][start : min(start + batch, n)]
        hidden, _ = group_mask(groups, rows["tokens"].shape[1], ratio, g)
        logits = student(data.masked_fill(hidden, student.mask_id), where=hidden)
        correct += int((logits.argmax(-1) == data[hidden]).sum())
        total += int(hidden.sum())
    return correct / max(total, 1)


@torch.no_grad()
def probe(features, corpus: CodeCorpus, padding, max_train: int = 3000, batch: int = 256) -> dict:
    """Linear-probe accuracy of mean-pooled features (over the places `padding(x)` does not mark)
    predicting the chunk's package, and the majority share (`eval.code.probe_labels`'s classes)."""
    names, tri, ytr, tei, yte = probe_labels(corpus)
    keep = torch.randperm(len(tri), generator=torch.Generator().manual_seed(0))[:max_train]
    tri, ytr = tri[keep], ytr[keep]

    def pooled(inputs):
        out = []
        for x in inputs.split(batch):
            h, pad = features(x).float(), padding(x)
            keep = torch.ones(x.shape, dtype=h.dtype) if pad is None else (~pad).to(h.dtype)
            out.append((h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True))
        return torch.cat(out)

    xtr, xte = pooled(corpus.train.tokens[tri]), pooled(corpus.test.tokens[tei])
    majority = max(torch.bincount(yte).tolist()) / len(yte)
    return {"probe": linear_probe(xtr, ytr, xte, yte), "probe_majority": majority, "probe_classes": len(names),
            "probe_test_chunks": len(tei)}


def student_probe(student: MaskedTokenModel, corpus: CodeCorpus, args) -> dict:
    table = TokenBytes.of(corpus.tokenizer)
    student.eval()
    return probe(lambda tokens: student.features(table.chunks(tokens, args.bytes).bytes), corpus,
                 lambda tokens: table.chunks(tokens, args.bytes).bytes == BYTE_PAD)


# runs ---------------------------------------------------------------------------------------------
def settings(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "seeds"}


def run_one(method: str, seed: int, args, corpus, train_rows, test_rows, teacher) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    torch.manual_seed(seed)  # the student's initialisation
    objective = HAD(student_model(args), teacher, ratio=args.ratio, **METHODS[method])
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed,
                      log_every=50)
    c0 = time.process_time()
    fit(objective, train_rows, cfg, folder, {"method": method, "seed": seed, **settings(args)}, progress=False)
    cpu_s = time.process_time() - c0
    student = objective.student
    result = {"method": method, "seed": seed, "train_cpu_s": cpu_s,
              "byte_accuracy": byte_accuracy(student, test_rows, args.ratio, args.eval_chunks),
              **student_probe(student, corpus, args)}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:8s} seed {seed}: masked-byte accuracy {result['byte_accuracy']:.3f}, package probe "
          f"{result['probe']:.3f}, {cpu_s:.0f} CPU s", flush=True)
    return result


def table(results: dict[str, list[dict]], teacher: dict, args) -> str:
    had, mlm = results["had"], results["byte-mlm"]
    p = had[0]
    lines = [
        f"HAD (BPE teacher -> byte student) vs the byte MLM alone on standard-library code: student width "
        f"{args.dim}, depth {args.depth}, {args.bytes} bytes per chunk ({args.length} BPE tokens), steps {args.steps}, "
        f"batch {args.batch}, lr {args.lr}, grouped masks at {args.ratio} of the BPE tokens, seeds "
        f"{', '.join(map(str, args.seeds))}. Teacher: BPE MLM ({args.vocab} tokens), width {args.teacher_dim}, depth "
        f"{args.teacher_depth}, {args.teacher_steps} steps, seed 0. Masked-byte accuracy on {args.eval_chunks} "
        f"held-out chunks; package probe: {p['probe_classes']} packages, {p['probe_test_chunks']} held-out chunks "
        f"(majority {p['probe_majority']:.3f}).",
        "",
        "| model | held-out masked-byte accuracy | package probe (linear) | train CPU s |",
        "|---|---|---|---|",
        f"| HAD student (distil + reconstruct) | {ms([r['byte_accuracy'] for r in had])} | "
        f"{ms([r['probe'] for r in had])} | {ms([r['train_cpu_s'] for r in had], '.0f')} |",
        f"| byte MLM alone (same masks) | {ms([r['byte_accuracy'] for r in mlm])} | "
        f"{ms([r['probe'] for r in mlm])} | {ms([r['train_cpu_s'] for r in mlm], '.0f')} |",
        f"| teacher (BPE MLM; BPE-token accuracy, not bytes) | {teacher['token_accuracy']:.3f} (tokens) | "
        f"{teacher['probe']:.3f} | {teacher['train_cpu_s']:.0f} |",
    ]
    by_seed = {r["seed"]: r for r in mlm}
    d_acc = [r["byte_accuracy"] - by_seed[r["seed"]]["byte_accuracy"] for r in had]
    d_probe = [r["probe"] - by_seed[r["seed"]]["probe"] for r in had]
    lines += ["", f"Paired deltas per seed, HAD - byte MLM: masked-byte accuracy {signed(d_acc)} (mean "
                  f"{ms(d_acc, sign='+')}); package probe {signed(d_probe)} (mean {ms(d_probe, sign='+')})."]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--length", type=int, default=32, help="BPE tokens per chunk")
    p.add_argument("--bytes", type=int, default=144, help="byte places per chunk (longer chunks are left out)")
    p.add_argument("--vocab", type=int, default=2048, help="BPE tokens")
    p.add_argument("--steps", type=int, default=300, help="student steps")
    p.add_argument("--teacher-steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--dim", type=int, default=64, help="student width")
    p.add_argument("--depth", type=int, default=2, help="student blocks")
    p.add_argument("--teacher-dim", type=int, default=128)
    p.add_argument("--teacher-depth", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.15, help="share of BPE tokens (groups) hidden")
    p.add_argument("--eval-chunks", type=int, default=512)
    p.add_argument("--runs", type=Path, default=Path("runs/had-code"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    corpus, train_rows, test_rows = load(args)
    teacher, teacher_result = train_teacher(args, corpus)
    results = {m: [] for m in METHODS}
    for seed in args.seeds:  # seed by seed, so that a partial comparison is still paired
        for m in METHODS:
            results[m].append(run_one(m, seed, args, corpus, train_rows, test_rows, teacher))
    text = table(results, teacher_result, args)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
