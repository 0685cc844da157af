"""Every sampler on the trained `digits` model: how close the class-conditional samples come to the
real digits as a distribution (Fréchet distance), against denoiser calls (NFE) and against cost.

Each point draws `--samples` digits with the label given and the 64 pixels hidden, conditioned on the
labels of as many held-out digits taken with classes in turn (0, 1, ..., 9, 0, ...). Reported per
sampler:
- Fréchet distance (Heusel et al. 2017, arXiv:1706.08500), precision and recall (Kynkäänniemi et al.
  2019, arXiv:1904.06991, k = 3) of the samples against the real training digits, in the fixed digit
  feature space of `eval/quality.py`; beside them the same numbers for those held-out real digits (the
  floor a perfect sampler reaches with as many samples) and for the class-mean images (a bad reference);
- conditional accuracy: an independent judge (logistic regression on the real training digits,
  `eval/digits.py`) gives the sample the class it was conditioned on. Accuracy alone rewards
  prototypical, low-diversity samples: the Fréchet distance and recall see what it misses;
- NFE per sample: denoiser reads while the sample still had hidden pixels (a batch's call count, the
  maximum over its rows, differs only for adaptive samplers); cost per sample in full reads (a light
  read of n of the 65 positions costs n / 65, a guided read 2); wall time per sample on this machine.
Writes docs/samplers_nfe.md (table and claims), docs/samplers_nfe.png and docs/samplers_nfe.json.
`--quality` measures only the rows of docs/quality.md and prints them.

    .venv/bin/python benchmarks/digits_samplers.py /tmp/runs/d2 --samples 200     # a few minutes on one core
    .venv/bin/python benchmarks/digits_samplers.py /tmp/runs/d2 --quality --samples 360
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unmask.data import digits
from unmask.eval.digits import conditional_canvas, digit_classifier
from unmask.eval.quality import digit_features, frechet_distance, precision_recall
from unmask.recipes import load_run
from unmask.sampling import (
    AmusedSampler,
    AncestralSampler,
    CachedDenoiser,
    ClassifierFreeGuidance,
    ConstrainedSampler,
    DreamSampler,
    ENATSampler,
    FirstHittingSampler,
    GuidanceSchedule,
    LLaDASampler,
    MagnetSampler,
    MaskGITSampler,
    RCRSampler,
    ReCAPSampler,
    ThresholdSampler,
    generate,
)
from unmask.schedules import Schedule

N = digits.LAYOUT.n
MASK = digits.MASK_ID


class Meter:
    """Wraps a denoiser (plain, cached or guided) and counts reads per sample."""

    def __init__(self, inner, cost_per_read: float = 1.0):
        self.inner, self.cost_per_read = inner, cost_per_read
        self.uses_progress = bool(getattr(inner, "uses_progress", False))
        self.active = 0  # rows read while they still had hidden places
        self.cost = 0.0  # in full reads of one row
        if hasattr(inner, "light"):
            self.full, self.light = self._full, self._light

    def _count(self, tokens, fraction=None):
        live = (tokens == MASK).any(1)
        self.active += int(live.sum())
        self.cost += self.cost_per_read * (float(live.sum()) if fraction is None else float(fraction[live].sum()))

    def __call__(self, tokens, **kw):
        self._count(tokens)
        return self.inner(tokens, **kw)

    def _full(self, tokens, **kw):
        self._count(tokens)
        return self.inner.full(tokens, **kw)

    def _light(self, tokens, queries, cache, **kw):
        self._count(tokens, queries.sum(1).double() / N)
        return self.inner.light(tokens, queries, cache, **kw)


@dataclass
class Point:
    name: str
    family: str
    sampler: object
    wrap: str = "plain"  # plain | cached | cfg-constant | cfg-increasing | cfg-decreasing
    note: str = ""
    metrics: dict = field(default_factory=dict)


def no_bright_pixels(row, position, token):
    """A constraint for AWRS: pixels (not the label) stay at grey level 12 or below."""
    return position == 0 or token <= 12


def points(maskgit) -> list[Point]:
    mg = lambda steps: MaskGITSampler(steps, Schedule("cosine"), 1.0, maskgit.choice_temperature)  # noqa: E731
    magnet = lambda steps: MagnetSampler(8, 8, steps, span_len=2, temperature=1.0, top_p=1.0, offset=1)  # noqa: E731
    ps = [Point(f"MaskGIT {s}", "MaskGIT", mg(s)) for s in (4, 8, 12, 16)]
    ps += [Point(f"aMUSEd {s}", "aMUSEd", AmusedSampler(s, draw="diffusers")) for s in (8, 12)]
    ps += [Point(f"LLaDA low-conf {s}", "LLaDA low-confidence", LLaDASampler(s, 32, temperature=1.0))
           for s in (8, 12, 16)]
    ps += [Point(f"LLaDA random {s}", "LLaDA random", LLaDASampler(s, 32, "random", temperature=1.0))
           for s in (8, 16)]
    ps += [Point(f"RCR {s}", "RCR (MDPO)", RCRSampler(s, 32, temperature=1.0)) for s in (8, 12, 16)]
    ps += [Point(f"Dream {a} 12", f"Dream {a}", DreamSampler(12, a, temperature=1.0, top_p=1.0))
           for a in ("maskgit_plus", "topk_margin", "entropy")]
    ps += [Point(f"Fast-dLLM p>={t}", "threshold: confidence (Fast-dLLM)",
                 ThresholdSampler(t, "confidence", None, temperature=1.0)) for t in (0.1, 0.2, 0.3, 0.5)]
    ps += [Point(f"dParallel H<={t}", "threshold: entropy (dParallel)",
                 ThresholdSampler(t, "entropy", None, temperature=1.0)) for t in (2.0, 2.3, 2.5)]
    ps += [Point("MAGNeT 8x1", "MAGNeT (rows as streams)", magnet((1,) * 8)),
           Point("MAGNeT 8x2", "MAGNeT (rows as streams)", magnet((2,) * 8))]
    for steps, pre in ((8, 2), (12, 4), (16, 4)):
        recap = ReCAPSampler(steps, pre, 1, choice_temperature=maskgit.choice_temperature, temperature=1.0)
        ps += [Point(f"ReCAP {steps} (cached)", "ReCAP", recap, "cached"),
               Point(f"ReCAP {steps} (full reads)", "ReCAP schedule, full reads", recap)]
    for steps in (8, 12):
        enat = ENATSampler(steps, temperature=1.0, choice_temperature=maskgit.choice_temperature)
        ps += [Point(f"ENAT {steps} (reuse)", "ENAT-style reuse", enat, "cached"),
               Point(f"ENAT {steps} (full reads)", "ENAT schedule, full reads", enat)]
    ps += [Point("MaskGIT 12 + CFG 2", "MaskGIT + guidance", mg(12), "cfg-constant", "constant s = 2"),
           Point("MaskGIT 12 + CFG 1->3", "MaskGIT + guidance", mg(12), "cfg-increasing", "MUSE: increasing to 3"),
           Point("MaskGIT 12 + CFG 3->1", "MaskGIT + guidance", mg(12), "cfg-decreasing", "MAGNeT: decreasing 3 to 1")]
    ps += [Point("AWRS 12 (grey <= 12)", "AWRS constrained", ConstrainedSampler(no_bright_pixels, 12),
                 note="constraint")]
    ps += [Point("first-hitting", "first-hitting", FirstHittingSampler()),
           Point("ancestral 64", "ancestral", AncestralSampler(64)),
           Point("ancestral 128", "ancestral", AncestralSampler(128))]
    return ps


def heldout_in_turn(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n held-out digits with classes in turn while each class lasts: (Long[n, 64], Long[n])."""
    test = digits.load("test")
    if n > len(test.labels):
        raise SystemExit(f"--samples {n}: the held-out split has only {len(test.labels)} digits")
    rank = torch.zeros_like(test.labels)  # the digit's place among the held-out digits of its class
    for c in range(digits.CLASSES):
        rank[test.labels == c] = torch.arange(int((test.labels == c).sum()))
    pick = torch.argsort(rank * digits.CLASSES + test.labels)[:n]
    return test.images[pick], test.labels[pick]


class Scorer:
    """Fréchet distance, precision and recall of a set of images against the training digits, with
    the spread of the Fréchet distance over bootstrap resamples of the set."""

    def __init__(self, resamples: int = 20, seed: int = 0):
        self.phi = digit_features()
        self.real = self.phi(digits.load("train").images)
        self.resamples, self.seed = resamples, seed

    def __call__(self, images: torch.Tensor) -> dict:
        fake = self.phi(images)
        precision, recall = precision_recall(self.real, fake, k=3)
        g = torch.Generator().manual_seed(self.seed)
        boot = [frechet_distance(fake[torch.randint(len(fake), (len(fake),), generator=g)], self.real)
                for _ in range(self.resamples)]
        return {"fd": frechet_distance(fake, self.real), "fd_sd": float(torch.tensor(boot).std()),
                "precision": precision, "recall": recall}


def references(labels: torch.Tensor, score: Scorer, judge) -> dict:
    """The floor (held-out real digits, as many as the samples) and the class-mean images."""
    real, _ = heldout_in_turn(len(labels))
    train = digits.load("train")
    means = torch.stack([train.images[train.labels == c].double().mean(0) for c in range(digits.CLASSES)])
    sets = {"held-out real digits": real, "class means": means.round().long()[labels]}
    return {name: score(x) | {"accuracy": float((torch.from_numpy(judge.predict(x.numpy() / 16.0)) == labels)
                                                .double().mean())} for name, x in sets.items()}


def denoiser_for(point: Point, model):
    hide = torch.zeros(N, dtype=torch.bool)
    hide[0] = True  # the unconditional branch does not see the label
    if point.wrap == "cached":
        return Meter(CachedDenoiser(model))
    if point.wrap.startswith("cfg"):
        kind = point.wrap.split("-")[1]
        schedule = {"constant": GuidanceSchedule("constant", 2.0), "increasing": GuidanceSchedule("increasing", 3.0),
                    "decreasing": GuidanceSchedule("decreasing", 3.0, 1.0)}[kind]
        return Meter(ClassifierFreeGuidance(model, schedule, hide=hide, mask_id=MASK), cost_per_read=2.0)
    return Meter(model)


@torch.no_grad()
def measure(point: Point, model, judge, score: Scorer, labels, batch: int, seed: int) -> dict:
    den = denoiser_for(point, model)
    g = torch.Generator().manual_seed(seed)
    outs, calls = [], 0
    t = time.perf_counter()
    for chunk in conditional_canvas(labels).split(batch):
        out = generate(den, chunk, point.sampler, mask_id=MASK, generator=g)
        outs.append(out.tokens)
        calls = max(calls, out.nfe + out.light)
        if point.note == "constraint":
            point.metrics["weights"] = point.metrics.get("weights", []) + out.state.log_weight
    wall = time.perf_counter() - t
    tokens = torch.cat(outs)
    images, _ = digits.decode(tokens)
    hit = torch.from_numpy(judge.predict(images.numpy() / 16.0)) == labels
    m = len(labels)
    acc = hit.double().mean().item()
    res = {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / m), "nfe_sample": den.active / m,
           "nfe_batch": calls, "cost": den.cost / m, "ms_sample": 1000 * wall / m} | score(images)
    if point.note == "constraint":
        res["constraint_ok"] = float((images <= 12).all(1).double().mean())
    return res


def write_table(ps: list[Point], refs: dict, out: Path, args, claims: list[str]) -> None:
    lines = ["# Samplers on the digits model: Fréchet distance against denoiser calls", "",
             f"Run `{args.run}`; {args.samples} class-conditional samples per point, conditioned on the labels of "
             f"{args.samples} held-out digits taken with classes in turn; batch {args.batch}, seed {args.seed}. "
             "Fréchet distance (FD, Heusel et al. 2017, arXiv:1706.08500), precision and recall (Kynkäänniemi et "
             "al. 2019, arXiv:1904.06991, k = 3) against the 1,437 real training digits in the digit feature "
             "space of `eval/quality.py` (an MLP classifier's penultimate layer; "
             f"{100 * digit_features().accuracy:.1f}% held-out accuracy); FD ± its spread over 20 bootstrap "
             "resamples of the samples. Accuracy: an independent logistic-regression judge gives the sample its "
             "class. Reproduce: `.venv/bin/python benchmarks/digits_samplers.py "
             f"{args.run} --samples {args.samples}` (about 5 minutes on one core; 300 samples take half as long "
             "again).", "",
             "NFE per sample counts the reads a sample took while it still had hidden pixels; a batch's calls are "
             "the most any of its rows took. Cost counts full reads of one sample: a light read of n of the 65 "
             "positions is n / 65, a guided read 2. Standard error of an accuracy: about "
             f"{100 * math.sqrt(0.9 * 0.1 / args.samples):.1f} points.", "",
             "References, as many images as samples: "
             + "; ".join(f"{k}: FD {v['fd']:.2f} ± {v['fd_sd']:.2f}, precision {v['precision']:.3f}, recall "
                         f"{v['recall']:.3f}, accuracy {v['accuracy']:.3f}" for k, v in refs.items()) + ".", "",
             "## Claims", ""] + [f"- {c}" for c in claims] + ["", "## All points", "",
             "| sampler | family | FD | precision | recall | accuracy | NFE / sample | calls / batch "
             "| cost / sample (full reads) | ms / sample |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in ps:
        m = p.metrics
        extra = f" (constraint held in {100 * m['constraint_ok']:.0f}%)" if "constraint_ok" in m else ""
        lines.append(f"| {p.name}{extra} | {p.family} | {m['fd']:.2f} ± {m['fd_sd']:.2f} | {m['precision']:.3f} "
                     f"| {m['recall']:.3f} | {m['accuracy']:.3f} ± {m['se']:.3f} | {m['nfe_sample']:.1f} "
                     f"| {m['nfe_batch']} | {m['cost']:.2f} | {m['ms_sample']:.2f} |")
    lines += ["", "![Fréchet distance against NFE and cost](samplers_nfe.png)", ""]
    (out / "samplers_nfe.md").write_text("\n".join(lines))


def plot(ps: list[Point], refs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    families = list(dict.fromkeys(p.family for p in ps))
    cmap = plt.get_cmap("tab20")
    for ax, key, label in ((axes[0], "nfe_sample", "denoiser calls per sample (NFE)"),
                           (axes[1], "cost", "cost per sample (full reads; light read = n/65, guided = 2)")):
        for i, fam in enumerate(families):
            pts = sorted((p for p in ps if p.family == fam), key=lambda p: p.metrics[key])
            ax.plot([p.metrics[key] for p in pts], [p.metrics["fd"] for p in pts], "-", ms=4,
                    color=cmap(i % 20), label=fam, marker="os^vD"[i // 20])
        for (name, ref), style in zip(refs.items(), ("--", ":"), strict=True):
            ax.axhline(ref["fd"], color="grey", lw=0.9, ls=style, label=f"{name} (no sampler)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("Fréchet distance to the training digits (digit features; lower is better)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.suptitle("digits: every sampler, Fréchet distance against denoiser calls")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(out / "samplers_nfe.png", dpi=120)


def claims(ps: list[Point], refs: dict) -> list[str]:
    by = {p.name: p.metrics for p in ps}

    def fd(name):
        m = by[name]
        return f"`{name}` FD {m['fd']:.2f} ± {m['fd_sd']:.2f}"

    floor, means = refs["held-out real digits"], refs["class means"]
    ranks = [torch.tensor([p.metrics[k] for p in ps]).argsort().argsort().double() for k in ("accuracy", "fd")]
    out = [f"Scale: held-out real digits reach FD {floor['fd']:.2f} (the floor at this sample count); the class "
           f"means, one prototype per class, score FD {means['fd']:.2f} and recall {means['recall']:.3f} with "
           f"accuracy {means['accuracy']:.3f}: accuracy alone rewards prototypical, low-diversity samples. Across "
           "all points the rank correlation of accuracy with FD is "
           f"{float(torch.corrcoef(torch.stack(ranks))[0, 1]):+.2f} (Spearman; -1: both order the samplers alike)."]
    cheap = sorted((p for p in ps if p.metrics["nfe_sample"] <= 16), key=lambda p: p.metrics["fd"])[:5]
    out.append("Lowest FD at 16 calls per sample or fewer: " + ", ".join(
        f"{fd(p.name)} ({p.metrics['nfe_sample']:.1f} calls, accuracy {p.metrics['accuracy']:.3f})" for p in cheap)
        + "; plain MaskGIT (the run's choice temperature) at 4, 8, 12, 16 steps: FD "
        + ", ".join(f"{by[f'MaskGIT {s}']['fd']:.2f}" for s in (4, 8, 12, 16)) + ", accuracy "
        + ", ".join(f"{by[f'MaskGIT {s}']['accuracy']:.3f}" for s in (4, 8, 12, 16)) + ".")
    fixed = {}
    for p in ps:
        if p.metrics["nfe_sample"] == round(p.metrics["nfe_sample"]) and p.wrap == "plain" and p.note == "":
            fixed.setdefault(int(p.metrics["nfe_sample"]), []).append(p)
    for nfe in sorted(k for k, v in fixed.items() if len(v) > 1):
        group = sorted(fixed[nfe], key=lambda p: p.metrics["fd"])
        acc = max(group, key=lambda p: p.metrics["accuracy"])
        best, second = group[0].metrics, group[1].metrics
        gap = "beyond" if second["fd"] - best["fd"] > math.hypot(best["fd_sd"], second["fd_sd"]) else "within"
        out.append(f"At {nfe} calls per sample, by FD: " + ", ".join(
                   f"`{p.name}` {p.metrics['fd']:.2f}" for p in group) + f" (first to second: {gap} the bootstrap "
                   f"spread). Most accurate: `{acc.name}` ({acc.metrics['accuracy']:.3f}), FD rank "
                   f"{group.index(acc) + 1} of {len(group)}.")
    mg = sorted((p for p in ps if p.family == "MaskGIT"), key=lambda p: p.metrics["nfe_sample"])
    near = {p.name: min(mg, key=lambda q: abs(math.log(q.metrics["nfe_sample"] / p.metrics["nfe_sample"])))
            for p in ps}
    for fam in dict.fromkeys(p.family for p in ps if p.family.startswith("threshold")):
        out.append(f"{fam}, FD at calls per sample (plain MaskGIT at the nearest step count): " + "; ".join(
            f"`{p.name}` {p.metrics['fd']:.2f} at {p.metrics['nfe_sample']:.1f} (`{near[p.name].name}` "
            f"{near[p.name].metrics['fd']:.2f})" for p in ps if p.family == fam) + ".")
    for steps in (8, 12, 16):
        c, f, m = (f"ReCAP {steps} (cached)", f"ReCAP {steps} (full reads)", f"MaskGIT {steps}")
        out.append(f"ReCAP {steps}: cached {fd(c)} at cost {by[c]['cost']:.2f}, the same schedule read fully "
                   f"{fd(f)} at cost {by[f]['cost']:.2f}, plain {fd(m)} at cost {by[m]['cost']:.2f}.")
    out += [f"ENAT-style reuse, {s} steps: {fd(f'ENAT {s} (reuse)')} at cost {by[f'ENAT {s} (reuse)']['cost']:.2f} "
            f"vs full reads {fd(f'ENAT {s} (full reads)')}." for s in (8, 12)]
    out.append("Guidance (cost 24 against 12): " + "; ".join(
        f"{fd(n)}, precision {by[n]['precision']:.3f}, recall {by[n]['recall']:.3f}, accuracy {by[n]['accuracy']:.3f}"
        for n in ("MaskGIT 12", "MaskGIT 12 + CFG 2", "MaskGIT 12 + CFG 1->3", "MaskGIT 12 + CFG 3->1")) + ".")
    out.append(f"{fd('first-hitting')} with {by['first-hitting']['nfe_batch']} calls per batch vs {fd('ancestral 64')}"
               f" and {fd('ancestral 128')} ({by['ancestral 128']['nfe_batch']} calls).")
    return out


def quality_rows(model, maskgit, judge, score: Scorer, args) -> None:
    """The rows of docs/quality.md, printed as a markdown table."""
    _, labels = heldout_in_turn(args.samples)
    rows = references(labels, score, judge)
    for p in (p for p in points(maskgit) if p.name in ("MaskGIT 12", "ancestral 64")):
        rows[p.name] = measure(p, model, judge, score, labels, args.batch, args.seed)
    print("| set | Fréchet distance | precision | recall | judge's accuracy |\n|---|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {m['fd']:.3f} ± {m['fd_sd']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} "
              f"| {m['accuracy']:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a trained digits run directory")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    ap.add_argument("--replot", action="store_true", help="rewrite table and figure from the saved JSON")
    ap.add_argument("--quality", action="store_true", help="only the rows of docs/quality.md, printed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_run(Path(args.run))
    model = loaded.objective.model.eval()
    maskgit = loaded.recipe.settings.sampler.build()
    score, judge = Scorer(seed=args.seed), digit_classifier(digits.load("train"))
    if args.quality:
        return quality_rows(model, maskgit, judge, score, args)
    _, labels = heldout_in_turn(args.samples)
    ps = points(maskgit)
    if args.replot:  # tables and figure again from the saved measurements
        saved = json.loads((Path(args.out) / "samplers_nfe.json").read_text())
        for p in ps:
            p.metrics = saved["points"][p.name]
        return report(ps, saved["references"], Path(args.out), args)
    refs = references(labels, score, judge)
    for p in ps:
        p.metrics |= measure(p, model, judge, score, labels, args.batch, args.seed)
        m = p.metrics
        print(f"{p.name:28s} FD {m['fd']:6.2f}  P {m['precision']:.3f}  R {m['recall']:.3f}  acc {m['accuracy']:.3f}"
              f"  NFE/sample {m['nfe_sample']:6.1f}  calls/batch {m['nfe_batch']:5d}  cost {m['cost']:6.2f}  "
              f"{m['ms_sample']:6.2f} ms/sample", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"samples": args.samples, "references": refs, "points": {p.name: p.metrics for p in ps}}
    (out / "samplers_nfe.json").write_text(json.dumps(saved, indent=1))
    report(ps, refs, out, args)


def report(ps: list[Point], refs: dict, out: Path, args) -> None:
    found = claims(ps, refs)
    print("\n".join(found))
    write_table(ps, refs, out, args, found)
    plot(ps, refs, out)
    print(f"wrote {out / 'samplers_nfe.md'} and {out / 'samplers_nfe.png'}")


if __name__ == "__main__":
    main()
