"""The MAE family on 32x32 glyphs (64 patches of 4x4), each variant against plain MAE (He et al. 2022,
arXiv:2111.06377) on the same budget: do HPM (P3), MTO (P4), UMD (P13), MFM (P43), SelectiveMAE (P64)
and DMJD (P72) show their claims once an image has 64 tokens instead of the digits' 16?

The glyphs (`unmask.data.image_sets.load("glyphs", split, 32)`, 111 characters x 12 font faces, both
splits) are written once as a uint8 array [N, 32, 32] with integer labels and go through recipe
`mae-digits`' own user-data path (`data.source=FILE.npy data.labels=LABELS.npy`): the held-out split
is that path's rule (SHA-1 of `glyphs32.npy#i`, 20%), not the glyph set's own split. The recipe
reads them at `data.size=32` with `data.levels=256` (its encoder is then built for 32x32); every
objective, the trainer and the probes are the recipe's.

    .venv/bin/python benchmarks/mae_variants_32.py --plateau        # MAE seed 0 at several step counts
    .venv/bin/python benchmarks/mae_variants_32.py --steps 200      # all variants x seeds 0 1 2

Runs are kept under --runs (default runs/mae-variants-32/VARIANT-STEPS-sSEED) and reused when their
result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402
from mae_variants import VARIANTS  # noqa: E402
from spread import mean_std, signed  # noqa: E402

from unmask.data import image_sets  # noqa: E402
from unmask.recipes.mae_digits import MAEDigits  # noqa: E402
from unmask.recipes.run import Run  # noqa: E402

SIZE, LEVELS = 32, 256
NAMES = ("mae", "hpm", "mto", "replace", "umd", "mfm", "selective", "dmjd")
EFFICIENCY = ("selective", "dmjd", "mto")  # the papers that claim accuracy per unit of compute


def write_glyphs(folder: Path) -> tuple[Path, Path]:
    """Both splits of the 32x32 glyphs as Uint8[N, 32, 32] and Long[N] .npy files (written once)."""
    images, labels = folder / "glyphs32.npy", folder / "glyphs32_labels.npy"
    if not images.exists():
        folder.mkdir(parents=True, exist_ok=True)
        sets = [image_sets.load("glyphs", s, SIZE) for s in ("train", "test")]
        np.save(images, torch.cat([s.images[:, 0] for s in sets]).numpy())
        np.save(labels, torch.cat([s.labels for s in sets]).numpy())
    return images, labels


def recipe_for(name: str, seed: int, steps: int, args, data: tuple[Path, Path],
               baselines: bool | None = None) -> MAEDigits:
    """The recipe of one run; the baselines (random init, raw pixels) are probed in MAE's runs unless
    `baselines` says otherwise."""
    baselines = name == "mae" if baselines is None else baselines
    return MAEDigits().with_overrides([
        f"train.steps={steps}", f"train.lr={args.lr}", f"train.warmup={args.warmup}", f"train.batch_size={args.batch}",
        f"train.seed={seed}", "train.checkpoint_every=0", f"model.dim={args.dim}", f"model.depth={args.depth}",
        "model.heads=4", "model.patch=4", "eval.probe_draws=5", f"eval.baselines={baselines}",
        f"data.source={data[0]}", f"data.labels={data[1]}", f"data.size={SIZE}", f"data.levels={LEVELS}",
        *VARIANTS[name][1]])


def run_one(name: str, seed: int, steps: int, args, data, baselines: bool | None = None) -> dict:
    """Train and probe one run (`baselines`: as in `recipe_for`), or read it back."""
    run = Run(args.runs / f"{name}-{steps}-s{seed}", progress=False)
    if run.has("result.json"):
        return run.read_json("result.json")
    recipe = recipe_for(name, seed, steps, args, data, baselines)
    train = recipe.training_data(run)
    objective = recipe.objective()
    c0 = time.process_time()
    recipe.fit(run, objective, train)
    train_cpu = time.process_time() - c0
    c0 = time.process_time()
    metrics = recipe.evaluate(run, objective)
    result = {"name": name, "seed": seed, "steps": steps, "train_cpu_s": train_cpu,
              "eval_cpu_s": time.process_time() - c0, **metrics}
    run.file("result.json").write_text(json.dumps(result, indent=1))
    print(f"{name:10s} {steps:5d} steps seed {seed}: 10-shot {metrics['mae_linear_few']:.3f}  "
          f"all-label {metrics['mae_linear']:.3f}  train {train_cpu:.0f} CPU s", flush=True)
    return result


def split_sizes(data) -> str:
    d = recipe_for("mae", 0, 1, argparse.Namespace(lr=1e-3, warmup=0, batch=1, dim=8, depth=1), data)
    (_, ytr), (_, yte) = d.split("train"), d.split("test")
    per_class = torch.bincount(ytr, minlength=int(ytr.max()) + 1)
    return (f"{len(ytr)} training and {len(yte)} held-out images of {len(per_class)} classes "
            f"({int(per_class.min())}-{int(per_class.max())} training images per class, "
            f"{int((torch.bincount(yte, minlength=len(per_class)) == 0).sum())} classes with none held out)")


def plateau_table(rows: list[dict]) -> str:
    lines = ["| steps | 10-shot linear | all-label linear | train CPU s |", "|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["steps"]):
        lines.append(f"| {r['steps']} | {r['mae_linear_few']:.3f} | {r['mae_linear']:.3f} | {r['train_cpu_s']:.0f} |")
    return "\n".join(lines)


def table(results: dict[str, list[dict]]) -> str:
    """Markdown: each variant's probes (mean +- sample std over seeds), paired deltas against MAE (and
    MTO against its replace-mode baseline), train CPU seconds and accuracy per CPU-minute."""
    lines = ["| variant | paper | 10-shot linear | delta vs MAE (per seed) | beats MAE | all-label linear "
             "| delta vs MAE (per seed) | train CPU s | 10-shot per train CPU-min |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {r["seed"]: r for r in results["mae"]}
    for name, rows in results.items():
        few = [r["mae_linear_few"] for r in rows]
        lin = [r["mae_linear"] for r in rows]
        cpu = [r["train_cpu_s"] for r in rows]
        per_min = [r["mae_linear_few"] / (r["train_cpu_s"] / 60) for r in rows]
        if name == "mae":
            d_few = d_lin = beats = "—"
        else:
            df = [r["mae_linear_few"] - base[r["seed"]]["mae_linear_few"] for r in rows]
            dl = [r["mae_linear"] - base[r["seed"]]["mae_linear"] for r in rows]
            d_few = f"{mean_std(df, sign='+')} ({signed(df)})"
            d_lin = f"{mean_std(dl, sign='+')} ({signed(dl)})"
            beats = "yes" if all(x > 0 for x in df) else "no"
        lines.append(f"| {name} | {VARIANTS[name][0]} | {mean_std(few)} | {d_few} | {beats} | {mean_std(lin)} | "
                     f"{d_lin} | {mean_std(cpu, '.0f')} | {mean_std(per_min)} |")
    if "mto" in results and "replace" in results:
        rep = {r["seed"]: r["mae_linear_few"] for r in results["replace"]}
        d = [r["mae_linear_few"] - rep[r["seed"]] for r in results["mto"]]
        lines.append(f"| mto vs replace | P4 MTO against its own baseline | | {mean_std(d, sign='+')} ({signed(d)}) "
                     f"| {'yes' if all(x > 0 for x in d) else 'no'} | | | | |")
    rand = [r["random_init_linear_few"] for r in results["mae"]]
    pix = [r["pixels_linear_few"] for r in results["mae"]]
    lines += [f"| (baseline) | same encoder, random init | {mean_std(rand)} | | | "
              f"{mean_std([r['random_init_linear'] for r in results['mae']])} | | | |",
              f"| (baseline) | raw pixels | {mean_std(pix)} | | | "
              f"{mean_std([r['pixels_linear'] for r in results['mae']])} | | | |"]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plateau", nargs="*", type=int, help="MAE seed 0 at these step counts (default 100 200 400 800)")
    p.add_argument("--only", nargs="*", choices=NAMES, help="variants to run (default all; mae always)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--no-baseline", action="store_true",
                   help="only train the --only variants, without MAE and the table (a process beside a first)")
    p.add_argument("--runs", type=Path, default=Path("runs/mae-variants-32"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    data = write_glyphs(args.runs)
    print(f"data: {split_sizes(data)}", flush=True)
    if args.plateau is not None:
        rows = [run_one("mae", 0, s, args, data) for s in (args.plateau or [100, 200, 400, 800])]
        print(plateau_table(rows))
    else:
        names = ([] if args.no_baseline else ["mae"]) + [n for n in (args.only or NAMES) if n != "mae"]
        results = {n: [run_one(n, s, args.steps, args, data) for s in args.seeds] for n in names}
        if args.no_baseline:
            return
        print(f"\nsteps {args.steps}, batch {args.batch}, lr {args.lr}, warmup {args.warmup}, width {args.dim}, "
              f"depth {args.depth}, patch 4 -> 64 tokens, ratio 0.75, seeds {args.seeds}\n")
        print(table(results))
    print(f"\nCPU time of this process: {time.process_time() - c0:.0f} s "
          f"(runs reused from {args.runs} cost nothing here; their train_cpu_s is in result.json)")


if __name__ == "__main__":
    main()
