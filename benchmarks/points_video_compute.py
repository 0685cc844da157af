"""Point-BERT (P60, Yu et al. 2022, arXiv:2111.14819), Point-CMAE (P58, Ren et al. 2024, arXiv:2407.05862)
and CrossVideoMAE (P57, Ahamed et al. 2025, arXiv:2502.07811) against their MAE baselines (Point-MAE,
P52, Pang et al. 2022, arXiv:2203.06604; VideoMAE, Tong et al. 2022, arXiv:2203.12602) at EQUAL
TRAINING CPU, at a budget where the baseline's probe has stopped rising.

Two parts per task (`points`: recipe `pointmae-shapes`; `video`: recipe `videomae-digits`):
- `curve`: the baseline's 10-shot linear probe against its training steps, seed 0 (`--curve`), to
  find where it stops improving;
- `compute`: at the baseline's budget `--budget` (S steps), each variant gets round(S * c_base / c_var)
  steps, where c is CPU ms per training step measured here, the objectives timed in turn on one thread
  (`costs.json`); seeds 0 1 2, paired deltas against the baseline of the same seed.
Equal compute means equal training CPU (process time), not FLOPs: the probes, the data and
Point-BERT's codebook (k-means, once) are not counted.

Both recipes are shrunk to fit a budget of under an hour of CPU per task (`SHRINK`: width 64,
decoder width 32; video batch 32); every other setting is the recipe's default, the same for every
method. Runs live under --runs (default runs/points_video_compute/TASK-METHOD-STEPS-sSEED), each
with its result.json, and are reused, so an interrupted comparison resumes and several processes
can share the work (`--jobs`).

    .venv/bin/python benchmarks/points_video_compute.py                        # everything, then the tables
    .venv/bin/python benchmarks/points_video_compute.py --jobs points-curve    # one share of the work
    .venv/bin/python benchmarks/points_video_compute.py --tables               # print what is done
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
import spread  # noqa: E402
from machine import describe  # noqa: E402

from unmask.recipes.pointmae_shapes import PointMAEShapes  # noqa: E402
from unmask.recipes.run import Run  # noqa: E402
from unmask.recipes.videomae_digits import VideoMAEDigits  # noqa: E402

SHRINK = {"points": ["model.dim=64", "model.decoder_dim=32"],
          "video": ["model.dim=64", "model.decoder_dim=32", "train.batch_size=32"]}
RECIPES = {"points": PointMAEShapes, "video": VideoMAEDigits}
BASELINE = {"points": "pointmae", "video": "videomae"}
VARIANTS = {"points": ("pointbert", "pointcmae"), "video": ("crossvideo",)}
PAPER = {"pointmae": "P52 Point-MAE", "pointbert": "P60 Point-BERT", "pointcmae": "P58 Point-CMAE",
         "videomae": "VideoMAE", "crossvideo": "P57 CrossVideoMAE"}
CURVE = {"points": (1000, 2000, 4000), "video": (300, 600, 1200)}  # the budget is one of them, run with the seeds
BUDGET = {"points": 2000, "video": 1200}
# the figures read per task: metric key -> column name
FIGURES = {"points": {"pretrained_linear_few": "10-shot linear"},
           "video": {"pretrained_direction_linear_few": "direction 10-shot",
                     "pretrained_digit_linear_few": "digit 10-shot"}}
EXTRA = {"points": {"pretrained_linear": "all-label linear", "pretrained_knn_few": "10-shot kNN"},
         "video": {"pretrained_direction_linear": "direction all-label", "pretrained_digit_linear": "digit all-label"}}


def recipe(task: str, method: str, steps: int, seed: int, baselines: bool):
    return RECIPES[task]().with_overrides([
        *SHRINK[task], f"objective.variant={method}", f"train.steps={steps}", f"train.seed={seed}",
        f"eval.baselines={baselines}", f"train.checkpoint_every={max(steps // 4, 1)}"])


def equal_compute_steps(budget: int, base_ms: float, method_ms: float) -> int:
    """Steps of a method whose training CPU equals `budget` steps of the baseline: round(S c_b / c_m)."""
    if budget < 1 or base_ms <= 0 or method_ms <= 0:
        raise ValueError(f"need budget >= 1 and positive step costs, got {budget}, {base_ms}, {method_ms}")
    return max(1, round(budget * base_ms / method_ms))


def step_costs(task: str, runs: Path, rounds: int = 3, steps: int = 10) -> dict[str, float]:
    """CPU ms per training step of each method of a task (batch as in training), the methods timed in
    turn, `rounds` x `steps` steps each after a warm-up, the median round kept; cached in costs.json."""
    path = runs / f"{task}-costs.json"
    if path.exists():
        return json.loads(path.read_text())
    methods = (BASELINE[task], *VARIANTS[task])
    bench = {}
    for m in methods:
        r = recipe(task, m, 1, 0, False)
        run = Run(runs / "scratch" / f"{task}-{m}", progress=False)
        data = r.training_data(run)
        objective = r.objective()
        r.prepare(run, objective, data)
        opt = torch.optim.AdamW(objective.parameters(), r.settings.train.lr)
        g = torch.Generator().manual_seed(0)
        n, b = len(next(iter(data.values()))), r.settings.train.batch_size

        def step(objective=objective, data=data, opt=opt, g=g, n=n, b=b):
            idx = torch.randint(n, (b,), generator=g)
            out = objective({k: v[idx] for k, v in data.items()}, generator=g)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        for _ in range(3):
            step()
        bench[m] = step
    times = {m: [] for m in methods}
    for _ in range(rounds):  # in turn, so a busy machine slows them alike
        for m in methods:
            c = time.process_time()
            for _ in range(steps):
                bench[m]()
            times[m].append(1000 * (time.process_time() - c) / steps)
    costs = {m: statistics.median(t) for m, t in times.items()}
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs, indent=1))
    return costs


def run_one(task: str, method: str, steps: int, seed: int, runs: Path) -> dict:
    run = Run(runs / f"{task}-{method}-{steps}-s{seed}", progress=False)
    if run.has("result.json"):
        return run.read_json("result.json")
    # the random-init row once (seed 0): its probes cost as much as the trained encoder's
    r = recipe(task, method, steps, seed, baselines=method == BASELINE[task] and steps == BUDGET[task] and seed == 0)
    c0 = time.process_time()
    data = r.training_data(run)
    objective = r.objective()
    r.prepare(run, objective, data)
    c1 = time.process_time()
    r.fit(run, objective, data)
    c2 = time.process_time()
    metrics = r.evaluate(run, objective)
    result = {"task": task, "method": method, "steps": steps, "seed": seed, "train_cpu_s": c2 - c1,
              "ms_per_step": (c2 - c1) * 1000 / steps, "run_cpu_s": time.process_time() - c0, **metrics}
    run.file("result.json").write_text(json.dumps(result, indent=1))
    shown = "  ".join(f"{v} {metrics[k]:.3f}" for k, v in FIGURES[task].items())
    print(f"{task} {method} {steps} steps seed {seed}: {shown}  train {c2 - c1:.0f} CPU s "
          f"({result['ms_per_step']:.0f} ms/step), run {result['run_cpu_s']:.0f} CPU s", flush=True)
    return result


def jobs(task: str, part: str, seeds: list[int], runs: Path, only: str = "") -> list[tuple[str, int, int]]:
    """(method, steps, seed) of a task's part: 'curve' (seed 0, the steps other than the budget),
    'base' (the baseline at the budget) or 'compute' (the variants, or `only` one; their steps need
    the costs, timed first)."""
    base = BASELINE[task]
    if part == "curve":
        return [(base, s, 0) for s in CURVE[task] if s != BUDGET[task]]
    if part == "base":
        return [(base, BUDGET[task], s) for s in seeds]
    if part != "compute" or (only and only not in VARIANTS[task]):
        raise ValueError(f"unknown share {task}-{part}{':' + only if only else ''}")
    costs = step_costs(task, runs)
    return [(m, equal_compute_steps(BUDGET[task], costs[base], costs[m]), s) for m in VARIANTS[task]
            if m == (only or m) for s in seeds]


def quarter_step(steps: int, quarter: int) -> int:
    """The step of a run's `quarter`-th checkpoint (runs save every steps // 4): at the same quarter,
    every method of a task has spent the same training CPU, at the same point of its own schedule."""
    return quarter * max(steps // 4, 1)


def probe_quarter(task: str, method: str, steps: int, seed: int, quarter: int, runs: Path) -> dict:
    """Probe a run's checkpoint at `quarter` / 4 of its steps (while or after it trains); cached in the
    run as quarter-K.json. The baseline's seed 0 also probes the same encoder at random init."""
    from unmask.train.checkpoint import load_checkpoint

    run = Run(runs / f"{task}-{method}-{steps}-s{seed}", progress=False)
    name = f"quarter-{quarter}.json"
    if run.has(name):
        return run.read_json(name)
    step = quarter_step(steps, quarter)
    ckpt = run.folder / "checkpoints" / f"step_{step:08d}"
    r = recipe(task, method, steps, seed, baselines=False)
    c0 = time.process_time()
    tensors, config, _ = load_checkpoint(ckpt)
    objective = r.restore(ckpt, tensors, config).eval()
    metrics = r.probe_scores(objective.features, r.trained_prefix)
    if method == BASELINE[task] and seed == 0:
        metrics.update(r.probe_scores(r.plain().objective().eval().features, "random_init_"))
    costs = json.loads((runs / f"{task}-costs.json").read_text())
    result = {"task": task, "method": method, "steps": step, "of_steps": steps, "seed": seed,
              "train_cpu_s": step * costs[method] / 1000, "probe_cpu_s": time.process_time() - c0, **metrics}
    run.file(name).write_text(json.dumps(result, indent=1))
    print(f"{task} {method} step {step} of {steps} seed {seed}: "
          + "  ".join(f"{v} {metrics[k]:.3f}" for k, v in FIGURES[task].items()), flush=True)
    return result


def done(runs: Path, task: str, method: str, steps: int, seeds, quarter: int = 4) -> list[dict]:
    """The results of finished runs (quarter 4), or of their probed quarter-`quarter` checkpoints."""
    out = []
    for s in seeds:
        run = Run(runs / f"{task}-{method}-{steps}-s{s}")
        name = "result.json" if quarter == 4 and run.has("result.json") else f"quarter-{quarter}.json"
        if run.has(name):
            out.append(run.read_json(name))
    return out


def curve_table(task: str, runs: Path) -> str:
    base = BASELINE[task]
    lines = [f"**{task}: {PAPER[base]}'s probe against its steps (seed 0)**", "",
             "| steps | " + " | ".join([*FIGURES[task].values(), *EXTRA[task].values()]) + " | train CPU s |",
             "|---" * (len(FIGURES[task]) + len(EXTRA[task]) + 2) + "|"]
    for steps in CURVE[task]:
        for r in done(runs, task, base, steps, [0]):
            cells = [f"{r[k]:.3f}" for k in [*FIGURES[task], *EXTRA[task]]]
            lines.append(f"| {steps} | " + " | ".join(cells) + f" | {r['train_cpu_s']:.0f} |")
    return "\n".join(lines)


def compute_table(task: str, seeds: list[int], runs: Path, quarter: int = 4) -> str:
    base = BASELINE[task]
    budget = BUDGET[task]
    costs_path = runs / f"{task}-costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    base_rows = {r["seed"]: r for r in done(runs, task, base, budget, seeds, quarter)}
    rows = [(base, budget)] + [(m, equal_compute_steps(budget, costs[base], costs[m])) for m in VARIANTS[task]
                               if costs]
    at = (f"the checkpoints at {quarter}/4 of each run (the baseline's step {quarter_step(budget, quarter)} of "
          f"{budget}; train CPU s estimated as steps x the timed ms/step)" if quarter < 4 else f"{budget} steps")
    lines = [f"**{task}: equal training CPU, {PAPER[base]} at {at}; seeds {', '.join(map(str, seeds))}**",
             "", "| method | steps | CPU ms/step, timed in turn (x base) | train CPU s (mean) | "
             + " | ".join(f"{v} | per seed | delta vs {base} (per seed) | wins" for v in FIGURES[task].values())
             + " | " + " | ".join(EXTRA[task].values()) + " |",
             "|---" * (4 + 4 * len(FIGURES[task]) + len(EXTRA[task])) + "|"]
    for m, steps in rows:
        rs = done(runs, task, m, steps, seeds, quarter)
        if not rs:
            continue
        ms = costs.get(m, float("nan"))
        shown = quarter_step(steps, quarter) if quarter < 4 else steps
        cells = [f"{m} ({PAPER[m]})", str(shown), f"{ms:.0f} ({ms / costs.get(base, ms):.2f}x)",
                 f"{statistics.mean(r['train_cpu_s'] for r in rs):.0f}"]
        for k in FIGURES[task]:
            xs = [r[k] for r in rs]
            cells += [spread.mean_std(xs), ", ".join(f"{x:.3f}" for x in xs)]
            if m == base:
                cells += ["—", "—"]
            else:
                d = [r[k] - base_rows[r["seed"]][k] for r in rs if r["seed"] in base_rows]
                cells += [f"{spread.mean_std(d, sign='+')} ({spread.signed(d)})" if d else "",
                          f"{sum(x > 0 for x in d)}/{len(d)}"]
        cells += [spread.mean_std([r[k] for r in rs]) for k in EXTRA[task]]
        lines.append("| " + " | ".join(cells) + " |")
    rand = [r for r in base_rows.values() if any(k.startswith("random_init") for k in r)]
    if rand:
        cells = ["same encoder, random init", "", "", ""]
        for k in FIGURES[task]:
            xs = [r[k.replace("pretrained_", "random_init_")] for r in rand]
            cells += [spread.mean_std(xs), ", ".join(f"{x:.3f}" for x in xs), "", ""]
        cells += [spread.mean_std([r[k.replace("pretrained_", "random_init_")] for r in rand]) for k in EXTRA[task]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", nargs="*", default=None,
                   help="shares to run, TASK-PART with PART in curve, base, compute, compute:VARIANT "
                        "(default: all, in order)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=Path("runs/points_video_compute"))
    p.add_argument("--tables", action="store_true", help="only print the tables of what is done")
    p.add_argument("--probe", nargs="*", default=[], metavar="TASK-METHOD-SEED@K",
                   help="probe a run's checkpoint at K/4 of its steps (a run that could not finish in time)")
    p.add_argument("--quarters", nargs="*", type=int, default=[], help="also print the tables at these K/4")
    p.add_argument("--budget", nargs="*", default=[], metavar="TASK=STEPS",
                   help=f"the baseline's budget of a task (default {BUDGET})")
    p.add_argument("--curve", nargs="*", default=[], metavar="TASK=S,S,...",
                   help=f"the curve's steps of a task (default {CURVE})")
    args = p.parse_args(argv)
    for spec in args.budget + args.curve:
        task, _, steps = spec.partition("=")
        if task not in RECIPES or not steps.replace(",", "").isdigit():
            p.error(f"expected TASK=STEPS with TASK one of {sorted(RECIPES)} and whole numbers, got {spec!r}")
    BUDGET.update({t: int(s) for t, _, s in (spec.partition("=") for spec in args.budget)})
    CURVE.update({t: tuple(map(int, s.split(","))) for t, _, s in (spec.partition("=") for spec in args.curve)})
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    shares = args.jobs if args.jobs is not None else [f"{t}-{part}" for t in RECIPES for part in ("curve", "base",
                                                                                                  "compute")]
    for spec in args.probe:
        name, quarter = spec.split("@")
        task, method, seed = name.split("-")
        seed = int(seed.lstrip("s"))
        part = "base" if method == BASELINE[task] else "compute"
        steps = next(st for m, st, _ in jobs(task, part, [seed], args.runs) if m == method)
        probe_quarter(task, method, steps, seed, int(quarter), args.runs)
    if args.probe:
        args.tables = True
    if not args.tables:
        for share in shares:
            task, part = share.split("-")
            part, _, only = part.partition(":")
            for method, steps, seed in jobs(task, part, args.seeds, args.runs, only):
                run_one(task, method, steps, seed, args.runs)
    text = "\n\n".join(f"{curve_table(t, args.runs)}\n\n{compute_table(t, args.seeds, args.runs)}" for t in RECIPES)
    for q in args.quarters:
        text += "".join(f"\n\n{compute_table(t, args.seeds, args.runs, q)}" for t in RECIPES)
    spent = sum(r["run_cpu_s"] for r in (json.loads(f.read_text()) for f in args.runs.glob("*/result.json")))
    spent += sum(r["probe_cpu_s"] for r in (json.loads(f.read_text()) for f in args.runs.glob("*/quarter-*.json")))
    costs = sum(1 for _ in args.runs.glob("*-costs.json"))
    text += (f"\n\nCPU: this process {time.process_time() - c0:.0f} s; every finished run together {spent:.0f} s "
             f"({spent / 60:.1f} min), plus {costs} cost timing(s) of about 10-15 s each.")
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
