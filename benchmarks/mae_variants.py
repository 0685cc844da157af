"""The MAE family on the 8x8 digits, each variant against plain MAE on the same budget: same encoder,
same steps, batch and learning rate, 3 seeds (and MAE with twice the steps, the budget of a teacher
plus its student); the figure is the 10-shot linear probe of frozen,
mean-pooled encoder features on the held-out split (mean over 5 draws of the labelled examples).

    .venv/bin/python benchmarks/mae_variants.py                    # all variants, 3 seeds; writes docs/mae_variants.md
    .venv/bin/python benchmarks/mae_variants.py --only mae hpm --seeds 0

Runs are kept under --runs (default runs/mae-variants/VARIANT-sSEED) and reused when their
metrics exist, so an interrupted comparison resumes. The teacher of mr-mae and maskalign is the
plain MAE run of the same seed (so those two get the teacher's budget on top of their own). The
hybrid rows (P23 Hybrid Distillation) have that teacher and a second one, a supervised ViT trained on
the training labels in runs/mae-variants/supervised-sSEED/classifier (the `supervised` row probes its
own features); `mae-3x` is MAE with their budget (MAE teacher + classifier + student steps).

    .venv/bin/python benchmarks/mae_variants.py --only hybrid hybrid-relation hybrid-feature supervised mae-3x \
        --out runs/hybrid/mae_variants_hybrid.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unmask.nn.token_drop import encoder_flops
from unmask.objectives.hybrid_distill import default_keep_ratios
from unmask.recipes.mae_digits import TEACHER_VARIANTS, MAEDigits, images
from unmask.recipes.run import Run

KEPT = "<!-- written by other benchmarks, kept when this table is made again -->"

# name -> (paper, dotted recipe settings)
VARIANTS = {
    "mae": ("MAE (baseline)", []),
    "mae-2x": ("MAE with twice the steps (a budget like teacher + student)", []),
    "color-red": ("P26 ColorMAE, red", ["objective.masker=red"]),
    "color-blue": ("P26 ColorMAE, blue", ["objective.masker=blue"]),
    "color-green": ("P26 ColorMAE, green", ["objective.masker=green"]),
    "color-purple": ("P26 ColorMAE, purple", ["objective.masker=purple"]),
    "hpm": ("P3 HPM", ["objective.variant=hpm"]),
    "lut": ("P1 LUT", ["objective.variant=lut"]),
    "mr-mae": ("P5 MR-MAE (MAE teacher)", ["objective.variant=mr-mae"]),
    "maskalign": ("P33 MaskAlign (MAE teacher)", ["objective.variant=maskalign"]),
    "dmjd": ("P72 DMJD", ["objective.variant=dmjd"]),
    "mfm": ("P43 MFM", ["objective.variant=mfm"]),
    "selective": ("P64 SelectiveMAE", ["objective.variant=selective"]),
    "umd": ("P13 UMD", ["objective.variant=umd"]),
    "replace": ("replace-mode MAE (MTO's baseline)", ["objective.variant=replace"]),
    "mto": ("P4 MTO (recalibration only)", ["objective.variant=mto"]),
    "mae-3x": ("MAE with three times the steps (the budget of hybrid's two teachers + student)", []),
    "hybrid": ("P23 Hybrid Distillation (MAE + supervised teachers)", ["objective.variant=hybrid"]),
    "hybrid-relation": ("P23, the MAE teacher's relations alone", ["objective.variant=hybrid",
                                                                   "objective.hybrid_feature=false"]),
    "hybrid-feature": ("P23, the supervised teacher's features alone", ["objective.variant=hybrid",
                                                                        "objective.hybrid_relation=false"]),
    "supervised": ("P23's supervised teacher itself (all training labels)", []),
}
STEPS_FACTOR = {"mae-2x": 2, "mae-3x": 3}
NOT_OBJECTIVES = ("supervised",)  # rows that probe a teacher, not a variant's student


def recipe_for(name: str, seed: int, args, *more: str) -> MAEDigits:
    """The recipe of variant `name` at the benchmark's budget; only the plain MAE probes the baselines."""
    return MAEDigits().with_overrides([
        f"train.steps={args.steps * STEPS_FACTOR.get(name, 1)}", f"train.lr={args.lr}", "train.warmup=50",
        f"train.seed={seed}", "train.checkpoint_every=0", f"model.dim={args.dim}", f"model.depth={args.depth}",
        "model.heads=4", "eval.probe_draws=5", f"eval.baselines={name == 'mae'}", *VARIANTS[name][1], *more])


def run_one(name: str, seed: int, args, runs: Path) -> dict:
    run = Run(runs / f"{name}-s{seed}", progress=False)
    if run.has("result.json"):
        return run.read_json("result.json")
    if name == "supervised":
        return run_supervised(seed, args, run)
    recipe = recipe_for(name, seed, args)
    if recipe.settings.objective.variant in TEACHER_VARIANTS:
        run_one("mae", seed, args, runs)  # the teacher: plain MAE of the same seed
        more = [f"objective.teacher_run={runs / f'mae-s{seed}'}"]
        if recipe.settings.objective.variant == "hybrid":  # and the supervised teacher of the same seed
            run_one("supervised", seed, args, runs)
            more.append(f"objective.classifier_run={runs / f'supervised-s{seed}' / 'classifier'}")
        recipe = recipe_for(name, seed, args, *more)
    data = recipe.training_data(run)
    objective = recipe.objective()
    recipe.prepare(run, objective, data)
    t0 = time.perf_counter()
    recipe.fit(run, objective, data)
    ms_step = (time.perf_counter() - t0) * 1000 / recipe.settings.train.steps
    metrics = recipe.evaluate(run, objective)
    result = {"name": name, "seed": seed, "ms_per_step": ms_step, **metrics}
    run.file("result.json").write_text(json.dumps(result, indent=1))
    print(f"{name:13s} seed {seed}: 10-shot linear {metrics['mae_linear_few']:.3f}  "
          f"all-label linear {metrics['mae_linear']:.3f}  {ms_step:.0f} ms/step", flush=True)
    return result


def run_supervised(seed: int, args, run: Run) -> dict:
    """The supervised teacher of the hybrid rows (trained in RUN/classifier on the training labels, with
    the benchmark's steps, batch and lr), probed as the other rows are."""
    recipe = recipe_for("supervised", seed, args)
    t0 = time.perf_counter()
    classifier = recipe.classifier(run)
    ms_step = (time.perf_counter() - t0) * 1000 / recipe.settings.train.steps
    metrics = recipe.probe_scores(classifier.eval().backbone.features, recipe.trained_prefix)
    result = {"name": "supervised", "seed": seed, "ms_per_step": ms_step, **metrics}
    run.file("result.json").write_text(json.dumps(result, indent=1))
    print(f"supervised    seed {seed}: 10-shot linear {metrics['mae_linear_few']:.3f}  "
          f"all-label linear {metrics['mae_linear']:.3f}", flush=True)
    return result


def hybrid_flops(args) -> str:
    """The student's token counts and forward FLOPs with and without hybrid's token dropping (counted)."""
    counts = MAEDigits().with_overrides([f"model.dim={args.dim}", f"model.depth={args.depth}", "model.heads=4",
                                         "objective.variant=hybrid"]).objective().counts
    full = (counts[0],) * len(counts)
    dropped, whole = encoder_flops(counts, args.dim), encoder_flops(full, args.dim)
    return (f"tokens per block {counts} (keep ratios {default_keep_ratios(args.depth)}) against {full}: "
            f"{sum(counts)} of {sum(full)} token-blocks, student forward {dropped / 1e6:.2f} of "
            f"{whole / 1e6:.2f} MFLOPs per image ({1 - dropped / whole:.0%} saved); the teachers' forward "
            f"passes (every token) come on top")


def step_costs(names: list[str], args, rounds: int = 12, warmup: int = 2) -> dict[str, float]:
    """Median CPU ms of one training step (forward, backward, AdamW) of each variant, run in turn,
    one step each per round, in this one-thread process: a cost ratio that other programs on the
    machine do not distort."""
    batch = images("train")[:128]
    steps = {}
    for name in names:
        # teacher variants get an untrained teacher: the same cost
        objective = recipe_for(name, 0, args).objective()
        opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
        steps[name] = (objective, opt, torch.Generator().manual_seed(0))
    times = {n: [] for n in names}
    for i in range(warmup + rounds):
        for name, (objective, opt, g) in steps.items():
            c0 = time.process_time()
            loss, _ = objective({"images": batch}, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= warmup:
                times[name].append((time.process_time() - c0) * 1000)
    return {n: statistics.median(t) for n, t in times.items()}


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


BASELINE = {"mto": "replace"}  # MTO plugs into encoders that read mask tokens; the rest into MAE


def table(results: dict[str, list[dict]], args, costs: dict[str, float] | None = None) -> str:
    costs = costs or {}
    lines = [
        "# The MAE family on 8x8 digits",
        "",
        f"Written by `benchmarks/mae_variants.py` (steps {args.steps}, lr {args.lr}, width {args.dim}, depth "
        f"{args.depth}, patch 2 -> 16 tokens, ratio 0.75, batch 128, seeds {', '.join(map(str, args.seeds))}). "
        "Figure: linear probe (logistic regression on standardised, mean-pooled frozen features) with 10 labels "
        "per class, mean over 5 draws, on the 360 held-out digits; mean +- std over seeds. delta = variant - "
        "baseline of the same seed (paired); MTO is also compared with its own baseline, replace-mode MAE. "
        "`beats MAE` when the paired delta is > 0 for every seed. Cost: CPU ms of one training step, all variants "
        "timed in turn in one single-thread process (`step_costs`), and relative to MAE; mr-mae and maskalign "
        "also need their teacher's training.",
        "",
        "| variant | paper | 10-shot linear | delta vs MAE | beats MAE | delta vs own baseline | all-label linear "
        "| 10-shot kNN | CPU ms/step (x MAE) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def paired(rows, base_name):
        base = {r["seed"]: r["mae_linear_few"] for r in results.get(base_name, [])}
        deltas = [r["mae_linear_few"] - base[r["seed"]] for r in rows if r["seed"] in base]
        if not deltas:
            return "—", "—"
        d = mean_std(deltas)
        return f"{d[0]:+.3f} +- {d[1]:.3f}", ("yes" if all(x > 0 for x in deltas) else "no")

    for name, rows in results.items():
        few = mean_std([r["mae_linear_few"] for r in rows])
        vs_mae, beats = paired(rows, "mae") if name != "mae" else ("—", "—")
        own = f"{paired(rows, BASELINE[name])[0]} (vs {BASELINE[name]})" if name in BASELINE else ""
        lin = mean_std([r["mae_linear"] for r in rows])
        knn = mean_std([r["mae_knn_few"] for r in rows])
        cost = (f"{costs[name]:.0f} ({costs[name] / costs['mae']:.2f}x)" if name in costs and "mae" in costs
                else "—")
        lines.append(f"| {name} | {VARIANTS[name][0]} | {few[0]:.3f} +- {few[1]:.3f} | {vs_mae} | {beats} | {own} | "
                     f"{lin[0]:.3f} +- {lin[1]:.3f} | {knn[0]:.3f} +- {knn[1]:.3f} | {cost} |")
    rand = mean_std([r["random_init_linear_few"] for r in results["mae"]])
    pix = mean_std([r["pixels_linear_few"] for r in results["mae"]])
    lines += [
        f"| (baseline) | same encoder, random init | {rand[0]:.3f} +- {rand[1]:.3f} | | | | | | |",
        f"| (baseline) | raw pixels | {pix[0]:.3f} +- {pix[1]:.3f} | | | | | | |",
        "",
        "What the rows are, at this scale (see each module's docstring for the exact rule):",
        "",
        "- ColorMAE's colours act on a 4x4 patch grid, where a blob is one or two patches; the paper's grids are "
        "14x14.",
        "- HPM scores patches with the current weights, not an EMA copy; its hard share reaches 0.5 at the last "
        "step.",
        "- LUT's two views differ by their masks only (no crops or colour jitter on 8x8 digits).",
        "- MR-MAE and MaskAlign distil a plain MAE of the same seed (the `mae` row), so they had that run's "
        "steps before their own: compare them with `mae-2x` as well.",
        "- DMJD regresses norm-pix pixels, not HOG; it encodes two views per image, about twice MAE's step cost.",
        "- MFM's masks are exact-count discs (or their outsides) on the 8x8 spectrum; no token is dropped.",
        "- SelectiveMAE omits its staged token expansion; it decodes 4 visible + 4 selected targets of 16.",
        "- UMD adds a time embedding to every token instead of AdaLN.",
        "- MTO is its attention recalibration only (its three extra losses are not implemented); its own baseline "
        "is replace-mode MAE.",
    ]
    if any(n.startswith("hybrid") for n in results):
        lines += [
            "- Hybrid Distillation: the student imitates the MAE teacher's attention maps (blocks "
            f"{args.depth // 2 + 1}-{args.depth} of {args.depth}, smooth L1 of n x maps) and regresses a supervised "
            "ViT's last-layer tokens (smooth L1), reading whole images and dropping the tokens the MAE teacher "
            "attends to least; " + hybrid_flops(args) + ". Its teachers are the `mae` run and the `supervised` "
            "classifier of the same seed "
            "(trained on all training labels: the student sees label information through it), so compare it with "
            "`mae-3x` (the same total steps) as well; `supervised` probes that classifier's own features.",
        ]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--runs", type=Path, default=Path("runs/mae-variants"))
    p.add_argument("--no-baseline", action="store_true",
                   help="only run the variants, without MAE and the table (a second process beside a first)")
    p.add_argument("--out", type=Path, default=Path("docs/mae_variants.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ([] if args.no_baseline else ["mae"]) + [n for n in (args.only or VARIANTS) if n != "mae"]
    results = {n: [run_one(n, s, args, args.runs) for s in args.seeds] for n in names}
    if "mae" not in results:
        return
    text = table(results, args, step_costs([n for n in names if n not in NOT_OBJECTIVES], args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = args.out.read_text().partition(KEPT)[2] if args.out.exists() else ""
    args.out.write_text(text + (f"\n{KEPT}{kept}" if kept else ""))
    print(text)


if __name__ == "__main__":
    main()
