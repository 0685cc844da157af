"""Function-body infilling on held-out standard-library code: CM3 (Aghajanyan et al. 2022, "CM3: A
Causal Masked Multimodal Model of the Internet", arXiv:2201.07520, P17) against masked diffusion (MDLM,
Sahoo et al. 2024, arXiv:2406.07524), both trained at equal training FLOPs on the same chunks, 3 seeds.

The held-out cases are docs/code.md's 40 functions of held-out files (bodies of 6..40 tokens of its
8,192-token BPE, chosen with that tokenizer); the models use a 2,048-token BPE (a smaller output layer:
about 3.5x fewer training FLOPs per step), so the same bodies take 7..49 of their tokens
(`eval/code_bodies.py` `same_functions`); each body is hidden in a window of 128 tokens. Two parse checks:
- whole file: the body spliced back into its file, which must pass `ast.parse` (docs/code.md's);
- function: the filled function alone, its `def` line and body (`function_parses`).
Parsing alone is cheap to satisfy (a body of `pass` parses everywhere; greedy decoding of a small
model often writes `______`, a valid statement), so the table also gives token accuracy, the share
of bodies exactly the original, and distinct tokens over tokens in the body.
Both models are trained on a mix: half of each batch on average are plain training chunks (MDLM:
t ~ U(eps, 1), each token hidden with probability t; CM3: Poisson(1) random spans moved to the end),
half are windows around function bodies of the training files (up to `--per-file` per file, bodies
of 1..`--train-max-hidden` tokens): MDLM hides only body tokens, each with probability t (LLaDA's SFT
masking with everything but the body as prompt), CM3 moves the whole body to the end as its one span
(`masking/cm3_body.py`). Decoding is greedy for both, fixed before any run (no temperature is tuned):
MDLM with MaskGIT, one token per call, most confident first, given the true body length; CM3 left to
right after `<mask:0>` until `<eos>` (at most 8 tokens over the true length). CM3's body rows end in a
random number of <eos> (1..1 + `--spare`), with the window shorter by as many tokens: rows that always end
their body's <eos> at the last place teach a causal model to stop by position, and the test windows
are `--slack` tokens shorter than the training ones.

    .venv/bin/python benchmarks/infill_code.py                  # 3 seeds; runs/infill_code/table.md
    .venv/bin/python benchmarks/infill_code.py --seeds 0 --steps 30 --runs /tmp/infill_try

Runs are kept under --runs (METHOD-sSEED/result.json) and read back when done, so an interrupted
comparison resumes. CM3 trains `--steps` steps; MDLM as many as make its training FLOPs equal
(`torch.utils.flop_counter` over a few batches of each; MDLM's head scores hidden tokens only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from machine import describe
from seeded_runs import budget_arguments, column, run_once
from spread import mean_std, paired_row, signed
from torch.utils.flop_counter import FlopCounterMode

from unmask.data import code
from unmask.eval import code as code_eval
from unmask.eval import code_bodies
from unmask.masking.cm3_body import BodyCausalMasking
from unmask.nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedDiffusion, NextTokenPrediction
from unmask.recipes.ar_code import ArCode
from unmask.sampling import MaskGITSampler
from unmask.schedules import Schedule
from unmask.train.trainer import batch_indices

METHODS = ("cm3", "mdlm")


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=300, batch=16, dim=128, depth=4, methods=METHODS, runs="runs/infill_code", warmup=40)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048, help="BPE tokens of the models")
    p.add_argument("--case-vocab", type=int, default=8192, help="BPE tokens that choose the cases (docs/code.md's)")
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--body-share", type=float, default=0.5, help="expected share of body windows in a batch")
    p.add_argument("--per-file", type=int, default=8, help="training bodies per training file")
    p.add_argument("--train-max-hidden", type=int, default=60)
    p.add_argument("--slack", type=int, default=8, help="CM3 may write this many tokens over the true body")
    p.add_argument("--spare", type=int, default=8, help="CM3 body rows end in 1..1+SPARE <eos>, drawn per row, so "
                   "the first <eos> is not always at the last place (0: always there, as before this option)")
    return p.parse_args()


def training_data(corpus: code.CodeCorpus, args) -> dict[str, dict]:
    """Each method's data dict: the plain training chunks, then the body rows repeated to make up
    `body_share` of the rows."""
    cases = code_eval.infill_cases(corpus, args.length, 10**9, 1, args.train_max_hidden, corpus.train.files,
                                   args.per_file)
    plain = corpus.train.tokens  # [M, L]
    sentinels = corpus.tokenizer.sentinel_ids
    if torch.isin(plain, torch.tensor(sentinels)).any():
        raise ValueError("a training chunk holds a sentinel: CM3 rows could not be told apart")
    repeat = max(1, round(args.body_share / (1 - args.body_share) * len(plain) / len(cases)))
    windows, body = code_bodies.body_windows(cases, args.length)
    g = torch.Generator().manual_seed(0)  # each repeat of a body row draws its own spare <eos>
    cm3_rows = torch.cat([code_bodies.cm3_body_rows(cases, args.length, sentinels[0], corpus.tokenizer.eos_id,
                                                    args.spare, g) for _ in range(repeat)])
    given = torch.cat([torch.zeros_like(plain, dtype=torch.bool), (~body).repeat(repeat, 1)])
    print(f"training: {len(plain)} chunks + {len(cases)} function bodies of training files x {repeat}", flush=True)
    return {"mdlm": {"tokens": torch.cat([plain, windows.repeat(repeat, 1)]), "prompt": given},
            "cm3": {"tokens": torch.cat([plain, cm3_rows])}}


def build(method: str, seed: int, args, tokenizer: code.CodeTokenizer) -> torch.nn.Module:
    cfg = ModelConfig(args.vocab, code.layout(args.length), dim=args.dim, depth=args.depth, heads=4)
    torch.manual_seed(seed)  # the weights' initialisation
    if method == "mdlm":
        return MaskedDiffusion(MaskedTokenModel(cfg))
    transform = BodyCausalMasking(tokenizer.sentinel_ids, tokenizer.eos_id)
    return NextTokenPrediction(CausalTokenModel(cfg), bos_id=ArCode.bos_id, transform=transform)


def step_flops(objective, data: dict, batch: int, draws: int = 4) -> float:
    """Mean FLOPs of one training step (forward and backward) over `draws` batches drawn as the trainer does."""
    total = 0.0
    for step in range(draws):
        idx = batch_indices(len(data["tokens"]), batch, 0, step)
        with FlopCounterMode(display=False) as counter:
            objective({k: v[idx] for k, v in data.items()}, torch.Generator().manual_seed(step)).loss.backward()
        total += counter.get_total_flops()
    objective.zero_grad(set_to_none=True)
    return total / draws


def distinct_share(ids: list[int]) -> float:
    """Distinct tokens over tokens of a body (0 for an empty one): greedy decoding of a small model
    often writes one token again and again (`______`), which parses; this shows it."""
    return len(set(ids)) / len(ids) if ids else 0.0


def pass_parses(cases, corpus) -> tuple[float, float]:
    """(whole file, function) parse shares when every body is `pass`, indented as the original: what
    parsing alone rewards."""
    whole = alone = 0
    for c in cases:
        original = code_eval.original_text(c, corpus)
        ids = corpus.tokenizer.encode(original[: len(original) - len(original.lstrip(" "))] + "pass")
        whole += code_eval.parses(corpus.tokenizer.decode(c.ids[: c.hidden[0]] + ids + c.ids[c.hidden[1] :]))
        alone += code_eval.function_parses(c, ids, corpus.tokenizer)
    return whole / len(cases), alone / len(cases)


def evaluate(method: str, objective, cases, corpus, args, seed: int) -> dict:
    objective.eval()
    if method == "mdlm":
        sampler = MaskGITSampler(max(1, args.length), Schedule("linear"), 0.0, 0.0)  # one token per call, greedy
        res = code_eval.infill(objective.model, cases, sampler, corpus, args.length, args.vocab, seed)
        extra = {"nfe": res.nfe}
    else:
        res = code_eval.cm3_infill(objective.model, cases, corpus, args.length, ArCode.bos_id, args.slack, seed, 0.0)
        true = [c.hidden[1] - c.hidden[0] for c in cases]
        stopped = [n < k + args.slack for n, k in zip(res.body_lengths, true, strict=True)]
        extra = {"stopped": sum(stopped) / len(cases),
                 "length_error": statistics.mean(abs(n - k) for n, k in zip(res.body_lengths, true, strict=True))}
    originals = [code_eval.original_text(c, corpus) for c in cases]
    return {"file_parse": res.share, "function_parse": res.function_share, "token_accuracy": res.token_accuracy,
            "exact": statistics.mean(float(b.rstrip() == o.rstrip())
                                     for b, o in zip(res.bodies, originals, strict=True)),
            "distinct": statistics.mean(distinct_share(corpus.tokenizer.encode(b)) for b in res.bodies), **extra,
            "bodies": res.bodies, "parsed": res.parsed, "function_parsed": list(res.function_parsed)}


def tokenizer_path(args, vocab: int) -> Path:
    """BPE of `vocab` tokens, trained once on the training files and kept beside the runs."""
    return args.runs / f"tokenizer-{vocab}.json"


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    args.runs.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "methods", "runs")}
    kept = [args.runs / f"{m}-s{seed}" / "result.json" for seed in args.seeds for m in args.methods]
    budget_file = args.runs / "budget.json"
    budget = json.loads(budget_file.read_text()) if budget_file.exists() else {}
    if budget.get("settings") == settings and all(f.exists() for f in kept):  # every run kept: only the table
        results = {m: [json.loads((args.runs / f"{m}-s{seed}" / "result.json").read_text()) for seed in args.seeds]
                   for m in args.methods}
        print("every run read back from", args.runs)
    else:
        budget, results = measure(args, settings)
        budget_file.write_text(json.dumps(budget, indent=1))
    print(f"held-out bodies: {budget['bodies'][0]}..{budget['bodies'][1]} tokens of {args.vocab} (6..40 of "
          f"{args.case_vocab}); the original function alone parses in {budget['original_parses']} of "
          f"{budget['cases']}; a body of `pass`: whole file {budget['pass_parse'][0]:.3f}, function "
          f"{budget['pass_parse'][1]:.3f}; distinct tokens over tokens of the original bodies "
          f"{budget['original_distinct']:.3f}")
    steps, flops = budget["steps"], budget["flops"]
    for m in METHODS:
        print(f"{m}: {flops[m] / 1e9:.2f} GFLOPs per step, {steps[m]} steps, "
              f"{flops[m] * steps[m] / 1e12:.2f} TFLOPs of training", flush=True)
    table(results, args, steps, flops, budget["cases"])
    print(f"CPU seconds: {time.process_time() - c0:.0f} in this process; "
          f"{sum(r['train_cpu_s'] + r['eval_cpu_s'] for rs in results.values() for r in rs):.0f} summed over the "
          "kept runs (training + evaluation)")


def measure(args, settings: dict) -> tuple[dict, dict]:
    """Load the corpus and the cases, count each method's FLOPs per step, train and evaluate every
    run not yet kept. Returns (the budget and case figures, the results per method)."""
    corpus = code.load_corpus(args.length, args.vocab, tokenizer_path=tokenizer_path(args, args.vocab))
    if not tokenizer_path(args, args.case_vocab).exists():
        code.load_corpus(args.length, args.case_vocab, tokenizer_path=tokenizer_path(args, args.case_vocab))
    # what chooses the cases: the same files read with the larger tokenizer (its chunks are not needed)
    chooser = dataclasses.replace(corpus, tokenizer=code.CodeTokenizer.load(tokenizer_path(args, args.case_vocab)))
    cases = code_bodies.same_functions(code_eval.infill_cases(chooser, args.length, args.cases), chooser, corpus,
                                     args.length)
    sizes = [c.hidden[1] - c.hidden[0] for c in cases]
    truth = [code_eval.function_parses(c, c.ids[c.hidden[0] : c.hidden[1]], corpus.tokenizer) for c in cases]
    data = training_data(corpus, args)
    flops = {m: step_flops(build(m, 0, args, corpus.tokenizer), data[m], args.batch) for m in METHODS}
    budget = {"settings": settings, "cases": len(cases), "bodies": [min(sizes), max(sizes)],
              "original_parses": sum(truth), "pass_parse": pass_parses(cases, corpus),
              "original_distinct": statistics.mean(distinct_share(c.ids[c.hidden[0] : c.hidden[1]]) for c in cases),
              "flops": flops, "steps": {m: round(args.steps * flops["cm3"] / flops[m]) for m in METHODS}}
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for m in args.methods:
            run_args = argparse.Namespace(**vars(args) | {"steps": budget["steps"][m]})
            results[m].append(run_once(m, seed, run_args, lambda m=m, s=seed: build(m, s, args, corpus.tokenizer),
                                       data[m], lambda obj, m=m, s=seed: evaluate(m, obj, cases, corpus, args, s)))
    return budget, results


def table(results: dict, args, steps: dict, flops: dict, n: int) -> None:
    lines = [f"Budget per run: width {args.dim}, depth {args.depth}, batch {args.batch}, lr {args.lr}, windows of "
             f"{args.length} tokens, {args.vocab} BPE tokens; "
             + "; ".join(f"{m} {steps[m]} steps ({flops[m] * steps[m] / 1e12:.2f} training TFLOPs)" for m in steps)
             + f"; seeds {' '.join(map(str, args.seeds))}; {n} held-out cases.", ""]
    if set(METHODS) <= set(results):
        lines += ["| figure | CM3 (ours) | MDLM | per-seed delta CM3 - MDLM |", "|---|---|---|---|"]
        for key, label in (("file_parse", "whole file parses"), ("function_parse", "filled function parses"),
                           ("token_accuracy", "token accuracy"), ("exact", "body exactly the original"),
                           ("distinct", "distinct tokens / tokens in the body")):
            lines.append(paired_row(label, column(results, "cm3", key), column(results, "mdlm", key)))
        for key in ("file_parse", "function_parse"):
            best = [max(a, b) for a, b in zip(column(results, "cm3", key), column(results, "mdlm", key), strict=True)]
            lines.append(f"| better of the two, {key.replace('_', ' ')} | {mean_std(best)} | | per seed: "
                         f"{signed(best)} |")
    for m, rs in results.items():
        cpu = [r["train_cpu_s"] for r in rs]
        lines.append(f"\n{m}: training CPU s per run {mean_std(cpu, '.0f')}; evaluation CPU s "
                     f"{mean_std([r['eval_cpu_s'] for r in rs], '.0f')}")
    if "cm3" in results:
        lines.append(f"CM3 stopped at <eos> in {mean_std(column(results, 'cm3', 'stopped'))} of the cases; mean "
                     f"|generated - true| body tokens {mean_std(column(results, 'cm3', 'length_error'), '.1f')}")
    text = "\n".join(lines)
    print(text)
    Path(args.runs / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
