"""I2P-MAE (P7, Zhang et al. 2023, arXiv:2212.06785) against Point-MAE on the `pointmae-shapes`
recipe at the same budget (same encoder, steps, batch, learning rate, seeds), and the 2D-guided mask
alone. Figure: the recipe's 10-shot linear probe of frozen, mean-pooled encoder features on the 800
held-out clouds (mean over 5 draws of the labelled clouds).

    .venv/bin/python benchmarks/i2p_mae.py                       # 3 seeds, 500 steps
    .venv/bin/python benchmarks/i2p_mae.py --only pointmae i2pmae --seeds 0

Rows: `pointmae` (the baseline, rerun at this budget), `i2pmae` (the release's rule: guided mask with
p = softmax(saliency), 2D term weight 1), `guided-mask` (the guided mask alone, 2D term weight 0, at a
temperature that makes p far from uniform: see `--temperature`), `untrained-2d` (a control, not run
by default: i2pmae whose 2D network had one training step, so its targets hold no image knowledge).
Runs are kept under --runs (default runs/i2p-mae/NAME-sSEED) and reused when their result exists, so
an interrupted comparison resumes; the table also shows every other row's finished runs. CPU seconds
are this one-thread process's own (`time.process_time`), which other programs on a shared machine do
not inflate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spread
from machine import describe  # noqa: E402

from unmask.recipes.pointmae_shapes import PointMAEShapes  # noqa: E402
from unmask.recipes.run import Run  # noqa: E402


def variants(temperature: float) -> dict[str, tuple[str, list[str]]]:
    """name -> (what it is, dotted recipe settings)."""
    return {
        "pointmae": ("P52 Point-MAE (baseline)", []),
        "i2pmae": ("P7 I2P-MAE: guided mask at T = 1 + 2D targets", ["objective.variant=i2pmae"]),
        "guided-mask": (f"P7 2D-guided mask alone (T = {temperature:g}), no 2D term",
                        ["objective.variant=i2pmae", "objective.image_weight=0",
                         f"objective.saliency_temperature={temperature}"]),
        "untrained-2d": ("control: i2pmae with a 2D network trained 1 step (targets carry no image knowledge)",
                         ["objective.variant=i2pmae", "image_model.steps=1"]),
    }


def run_one(name: str, seed: int, args, runs: Path) -> dict:
    run = Run(runs / f"{name}-s{seed}", progress=False)
    if run.has("result.json"):
        return run.read_json("result.json")
    recipe = PointMAEShapes().with_overrides([
        f"train.steps={args.steps}", f"train.seed={seed}", f"eval.baselines={name == 'pointmae'}",
        *variants(args.temperature)[name][1]])
    c0 = time.process_time()
    data = recipe.training_data(run)  # i2pmae: the 2D network is trained here, and reads every cloud
    objective = recipe.objective()
    recipe.prepare(run, objective, data)
    c1 = time.process_time()
    recipe.fit(run, objective, data)
    c2 = time.process_time()
    metrics = recipe.evaluate(run, objective)
    result = {"name": name, "seed": seed, "prep_cpu_s": c1 - c0, "ms_per_step": (c2 - c1) * 1000 / args.steps,
              "run_cpu_s": time.process_time() - c0, **metrics}
    run.file("result.json").write_text(json.dumps(result, indent=1))
    print(f"{name:12s} seed {seed}: 10-shot linear {metrics['pretrained_linear_few']:.3f}  all-label linear "
          f"{metrics['pretrained_linear']:.3f}  {result['ms_per_step']:.0f} CPU ms/step  "
          f"run {result['run_cpu_s']:.0f} CPU s", flush=True)
    return result


def mean_std(xs: list[float]) -> str:
    """mean +- population std, as docs/points.md reports them."""
    return spread.mean_std(xs, ".3f", population=True)


def table(results: dict[str, list[dict]], args) -> str:
    names = variants(args.temperature)
    base = {r["seed"]: r for r in results["pointmae"]}
    lines = [
        f"`benchmarks/i2p_mae.py`: recipe pointmae-shapes, {args.steps} steps of 32 clouds, seeds "
        f"{', '.join(map(str, args.seeds))}; all other settings default. 10-shot linear probe on the 800 held-out "
        "clouds, mean +- std (population) over seeds; delta = row - pointmae of the same seed.",
        "",
        "| row | what | 10-shot linear | per seed | delta vs Point-MAE (per seed) | wins | all-label linear "
        "| 10-shot kNN | CPU ms/step (x Point-MAE) | 2D network + targets, CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ms_base = statistics.mean(r["ms_per_step"] for r in results["pointmae"])
    for name, rows in results.items():
        few = [r["pretrained_linear_few"] for r in rows]
        if name == "pointmae":
            delta, wins = "—", "—"
        else:
            d = [r["pretrained_linear_few"] - base[r["seed"]]["pretrained_linear_few"] for r in rows]
            delta = f"{statistics.mean(d):+.3f} +- {statistics.pstdev(d):.3f} ({', '.join(f'{x:+.3f}' for x in d)})"
            wins = f"{sum(x > 0 for x in d)}/{len(d)}"
        ms = statistics.mean(r["ms_per_step"] for r in rows)
        prep = "—" if name == "pointmae" else f"{statistics.mean(r['prep_cpu_s'] for r in rows):.0f}"
        lines.append(f"| {name} | {names[name][0]} | {mean_std(few)} | {', '.join(f'{x:.3f}' for x in few)} | "
                     f"{delta} | {wins} | {mean_std([r['pretrained_linear'] for r in rows])} | "
                     f"{mean_std([r['pretrained_knn_few'] for r in rows])} | {ms:.0f} ({ms / ms_base:.2f}x) | {prep} |")
    rand = [r["random_init_linear_few"] for r in results["pointmae"]]
    lines.append(f"| random init | same encoder, untrained | {mean_std(rand)} | {', '.join(f'{x:.3f}' for x in rand)} "
                 "| | | | | | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(variants(1.0)), help="rows to run (default all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.002,
                   help="guided-mask row: softmax temperature of the saliency (the release's is 1)")
    p.add_argument("--runs", type=Path, default=Path("runs/i2p-mae"))
    p.add_argument("--no-baseline", action="store_true",
                   help="only run the rows named, without Point-MAE and the table (a second process beside a first)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    rows = args.only or [n for n in variants(1.0) if n != "untrained-2d"]
    names = ([] if args.no_baseline else ["pointmae"]) + [n for n in rows if n != "pointmae"]
    results = {n: [run_one(n, s, args, args.runs) for s in args.seeds] for n in names}
    if args.no_baseline:
        return
    for name in variants(1.0):  # rows run before (e.g. a control of one seed)
        done = [Run(args.runs / f"{name}-s{s}") for s in args.seeds]
        if name not in results and any(r.has("result.json") for r in done):
            results[name] = [r.read_json("result.json") for r in done if r.has("result.json")]
    text = table(results, args)
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
