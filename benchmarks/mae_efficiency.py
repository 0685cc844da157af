"""Accuracy per unit of compute: do SelectiveMAE (P64, Wang et al. 2024, arXiv:2406.11933), DMJD (P72,
Ma et al. 2023, arXiv:2301.00230) and MTO (P4, Choi et al. 2024, arXiv:2404.08330) reach MAE's best
probe (He et al. 2022, arXiv:2111.06377) at less training compute, as each claims?

SelectiveMAE claims MAE's accuracy at a fraction of the cost (it encodes and reconstructs only a
selection of the patches); DMJD and MTO claim fewer epochs to MAE's accuracy (MTO against its own
replace-mode baseline, which is also run). Each method is trained as separate runs of 50, 100, 200
and 400 steps (warmup 30 in each, as in `mae_variants_32.py`'s step plateau) on the 32x32 glyphs of
`mae_variants_32.py` (64 patches, recipe `mae-digits` with `data.size=32`), seeds 0 1 2, and its
10-shot linear probe is set against the measured training CPU seconds (process time of the training
alone) and the counted FLOPs of the run (one step's forward and backward, counted by
`torch.utils.flop_counter`, times the steps). The methods that cost about 2x MAE per step (DMJD, MTO,
replace) stop at 200 steps: their 400-step run costs more than MAE's 400-step run, so it cannot reach
MAE's best at less compute.

MAE's best is the highest of its budgets in each seed (MAE's probe on glyphs falls after 200 steps).
A method reaches it at less compute in a seed when one of its runs scores at least that much with
fewer training CPU seconds (and, separately, fewer FLOPs) than MAE's best run.

    .venv/bin/python benchmarks/mae_efficiency.py                     # everything, about 20 CPU-minutes
    .venv/bin/python benchmarks/mae_efficiency.py --seeds 2           # a second process beside the first
    .venv/bin/python benchmarks/mae_efficiency.py --figure curve.png  # the curve as a PNG
    .venv/bin/python benchmarks/mae_efficiency.py --read-only         # tables of the runs made so far

Within a seed the runs are made in `ORDER`: the ones that answer the claim most cheaply first.

Runs are kept under --runs (default runs/mae_efficiency/METHOD-STEPS-sSEED, the layout of
`mae_variants_32.py`) and reused when their result.json exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402
from mae_variants import VARIANTS  # noqa: E402
from mae_variants_32 import recipe_for, run_one, split_sizes, write_glyphs  # noqa: E402
from spread import mean_std, signed  # noqa: E402

from unmask.recipes.run import Run  # noqa: E402

BUDGETS = {"mae": (50, 100, 200, 400), "selective": (50, 100, 200, 400), "dmjd": (50, 100, 200),
           "mto": (50, 100, 200), "replace": (50, 100, 200)}
# the order runs are made in, per seed: first what answers the claim most cheaply (each method up to about
# MAE's 200-step compute), then the points that only extend the curve
ORDER = (("mae", 50), ("mae", 100), ("mae", 200), ("selective", 50), ("selective", 100), ("selective", 200),
         ("dmjd", 50), ("dmjd", 100), ("mto", 50), ("mto", 100), ("replace", 50), ("replace", 100),
         ("selective", 400), ("mae", 400), ("dmjd", 200), ("mto", 200), ("replace", 200))
REFERENCES = {"selective": ("mae",), "dmjd": ("mae",), "mto": ("replace", "mae"), "replace": ("mae",)}


def step_flops(name: str, args, data) -> float:
    """FLOPs of one training step (forward and backward) of `name` on a batch of training glyphs."""
    recipe = recipe_for(name, 0, 1, args, data)
    images = recipe.split("train")[0][: args.batch]
    objective = recipe.objective()
    with FlopCounterMode(display=False) as counter:
        objective({"images": images}, generator=torch.Generator().manual_seed(0)).loss.backward()
    return float(counter.get_total_flops())


def curve_table(results: dict[str, dict[int, list[dict]]], flops: dict[str, float]) -> str:
    """Markdown: each method's 10-shot probe per budget (mean +- sample std, then per seed), training CPU
    seconds and TFLOPs of the run."""
    lines = ["| method | steps | 10-shot linear | per seed | train CPU s | TFLOPs |", "|---|---|---|---|---|---|"]
    for name, by_steps in results.items():
        for steps, rows in by_steps.items():
            few = [r["mae_linear_few"] for r in rows]
            lines.append(f"| {name} | {steps} | {mean_std(few)} | {', '.join(f'{x:.3f}' for x in few)} | "
                         f"{mean_std([r['train_cpu_s'] for r in rows], '.1f')} | {flops[name] * steps / 1e12:.2f} |")
    return "\n".join(lines)


def best(rows: list[dict]) -> dict:
    """The run of highest 10-shot probe among one seed's budgets (the cheaper on a tie)."""
    return max(rows, key=lambda r: (r["mae_linear_few"], -r["steps"]))


def reached(rows: list[dict], target: float, cost) -> dict | None:
    """The cheapest run (by `cost`) among one seed's budgets that scores at least `target`, else None."""
    hits = [r for r in rows if r["mae_linear_few"] >= target]
    return min(hits, key=cost) if hits else None


def claim_table(results: dict[str, dict[int, list[dict]]], flops: dict[str, float], seeds: list[int]) -> str:
    """Markdown: per method and reference, the reference's best per seed, the method's cheapest run that
    reaches it, and its cost as a share of the reference's best run (CPU seconds; FLOPs)."""
    def per_seed(name: str, seed: int) -> list[dict]:
        return [r for rows in results[name].values() for r in rows if r["seed"] == seed]

    def both(name: str, ref: str) -> list[int]:
        return [s for s in seeds if per_seed(name, s) and per_seed(ref, s)]

    def run_flops(r: dict) -> float:
        return flops[r["name"]] * r["steps"]

    lines = ["| method | reference | reference's best (steps) per seed | method's best per seed | first run reaching "
             "it: steps (CPU share, FLOP share) per seed | reaches it at less CPU | at fewer FLOPs |",
             "|---|---|---|---|---|---|---|"]
    for name, refs in REFERENCES.items():
        if name not in results:
            continue
        for ref in refs:
            if ref not in results or not both(name, ref):
                continue
            cells, own, by_cpu, by_flops = [], [], [], []
            for seed in both(name, ref):
                top = best(per_seed(ref, seed))
                own.append(f"{best(per_seed(name, seed))['mae_linear_few']:.3f}")
                hit_cpu = reached(per_seed(name, seed), top["mae_linear_few"], lambda r: r["train_cpu_s"])
                hit_flops = reached(per_seed(name, seed), top["mae_linear_few"], run_flops)
                by_cpu.append(hit_cpu is not None and hit_cpu["train_cpu_s"] < top["train_cpu_s"])
                by_flops.append(hit_flops is not None and run_flops(hit_flops) < run_flops(top))
                cells.append("never" if hit_cpu is None else f"{hit_cpu['steps']} "
                             f"({hit_cpu['train_cpu_s'] / top['train_cpu_s']:.2f}, "
                             f"{run_flops(hit_cpu) / run_flops(top):.2f})")
            tops = ", ".join(f"{t['mae_linear_few']:.3f} ({t['steps']})"
                             for t in (best(per_seed(ref, s)) for s in both(name, ref)))
            lines.append(f"| {name} | {ref} | {tops} "
                         f"| {', '.join(own)} | {'; '.join(cells)} | {sum(by_cpu)} of {len(cells)} "
                         f"| {sum(by_flops)} of {len(cells)} |")
    return "\n".join(lines)


def best_deltas(results: dict[str, dict[int, list[dict]]], seeds: list[int]) -> str:
    """Each method's best probe over its budgets minus MAE's best, paired per seed."""
    lines = []
    for name in results:
        if name == "mae":
            continue
        runs = {n: {s: [r for rows in results[n].values() for r in rows if r["seed"] == s] for s in seeds}
                for n in (name, "mae")}
        d = [best(runs[name][s])["mae_linear_few"] - best(runs["mae"][s])["mae_linear_few"]
             for s in seeds if runs[name][s] and runs["mae"][s]]
        if not d:
            continue
        lines.append(f"- {name}: best over budgets minus MAE's best {mean_std(d, sign='+')} ({signed(d)})")
    return "\n".join(lines)


def figure(results: dict[str, dict[int, list[dict]]], flops: dict[str, float], path: Path) -> None:
    """The 10-shot probe against training CPU seconds and against FLOPs: each method's mean over seeds
    (error bars: sample std on both axes), its single runs faint, MAE's mean best dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    tops = [max(r["mae_linear_few"] for rows in results["mae"].values() for r in rows if r["seed"] == s)
            for s in {r["seed"] for rows in results["mae"].values() for r in rows}]
    for ax, unit in zip(axes, ("cpu", "flops"), strict=True):
        for i, (name, by_steps) in enumerate(results.items()):
            colour = f"C{i}"
            xs, ys, xerr, yerr = [], [], [], []
            for steps, rows in by_steps.items():
                x = [r["train_cpu_s"] if unit == "cpu" else flops[name] * steps / 1e12 for r in rows]
                y = [r["mae_linear_few"] for r in rows]
                ax.scatter(x, y, color=colour, alpha=0.25, s=10)
                xs.append(np.mean(x))
                ys.append(np.mean(y))
                xerr.append(np.std(x, ddof=1) if len(x) > 1 else 0.0)
                yerr.append(np.std(y, ddof=1) if len(y) > 1 else 0.0)
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=colour, marker="o", ms=4, capsize=2,
                        label=VARIANTS[name][0])
            for x, y, steps in zip(xs, ys, by_steps, strict=True):
                ax.annotate(str(steps), (x, y), fontsize=6, color=colour, xytext=(3, 3), textcoords="offset points")
        ax.axhline(float(np.mean(tops)), color="C0", ls="--", lw=0.8, label="MAE's best (mean of seeds)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training CPU seconds (one thread)" if unit == "cpu" else "training TFLOPs (counted)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("10-shot linear probe, held-out glyphs")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=3)
    fig.suptitle("MAE family on 32x32 glyphs: probe against training compute (50-400 steps; seeds 0 1 2)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=tuple(BUDGETS), help="methods to run (default all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--runs", type=Path, default=Path("runs/mae_efficiency"))
    p.add_argument("--figure", type=Path, help="write the curve as this PNG")
    p.add_argument("--read-only", action="store_true", help="train nothing: tables of the finished runs only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    data = write_glyphs(args.runs)
    print(f"data: {split_sizes(data)}", flush=True)
    names = args.only or list(BUDGETS)
    for seed in args.seeds:  # seed-major, so that an interrupted measurement leaves whole seeds
        for n, steps in ORDER:
            if n in names and not args.read_only:
                # the baselines (random init, raw pixels) do not depend on the budget: probed once per seed
                run_one(n, seed, steps, args, data, baselines=n == "mae" and steps == 200)
    done = {(n, steps, seed): Run(args.runs / f"{n}-{steps}-s{seed}", progress=False)
            for n in names for steps in BUDGETS[n] for seed in args.seeds}
    done = {k: run.read_json("result.json") for k, run in done.items() if run.has("result.json")}
    results = {n: {steps: [done[n, steps, s] for s in args.seeds if (n, steps, s) in done] for steps in BUDGETS[n]}
               for n in names}
    results = {n: {steps: rows for steps, rows in by.items() if rows} for n, by in results.items()}
    results = {n: by for n, by in results.items() if by}
    flops = {n: step_flops(n, args, data) for n in names}
    print(f"\nbatch {args.batch}, lr {args.lr}, warmup {args.warmup}, width {args.dim}, depth {args.depth}, patch 4 "
          f"-> 64 tokens, ratio 0.75, seeds {args.seeds}; GFLOPs per step: "
          + ", ".join(f"{n} {f / 1e9:.2f}" for n, f in flops.items()) + "\n")
    print(curve_table(results, flops))
    if "mae" in results:
        print()
        print(claim_table(results, flops, args.seeds))
        print()
        print(best_deltas(results, args.seeds))
        if args.figure:
            figure(results, flops, args.figure)
            print(f"\nfigure: {args.figure}")
    missing = [f"{n}-{steps}-s{seed}" for n in names for steps in BUDGETS[n] for seed in args.seeds
               if (n, steps, seed) not in done]
    spent = sum(r["train_cpu_s"] + r["eval_cpu_s"] for r in done.values())
    print(f"\nCPU time of this process: {time.process_time() - c0:.0f} s; training and probing of the "
          f"{len(done)} runs in the tables (result.json, reused or not): {spent:.0f} s"
          + (f"; not run: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
