"""Every sampler on the trained `digits` model: conditional accuracy of class-conditional samples
against denoiser calls (NFE) and against cost.

Each point draws `--samples` digits (classes in turn) with the label given and the 64 pixels hidden,
and an independent judge (logistic regression on the real training digits, `eval/digits.py`) says
whether the sample shows the class it was conditioned on. Reported per sampler:
- NFE per sample: denoiser reads while the sample still had hidden pixels (a batch's call count is
  the maximum over its rows, also reported; the two differ only for adaptive samplers);
- cost per sample in full reads: a light read of n of the 65 positions costs n / 65 (ReCAP, ENAT
  reuse), and a guided read costs 2 (conditional and unconditional branch);
- wall time per sample on this machine.
Writes docs/samplers_nfe.md (table and claims: threshold decoding vs 12-step MaskGIT, ReCAP vs plain
MaskGIT at equal quality, ...), docs/samplers_nfe.png and the raw numbers docs/samplers_nfe.json.

    .venv/bin/python benchmarks/digits_samplers.py /tmp/runs/d2            # a few minutes on one core
    .venv/bin/python benchmarks/digits_samplers.py /tmp/runs/d2 --samples 300 --out /tmp/nfe
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
    ps += [Point(f"aMUSEd {s}", "aMUSEd", AmusedSampler(s)) for s in (8, 12)]
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
           Point("ancestral 128", "ancestral", AncestralSampler(128))]
    return ps


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
def measure(point: Point, model, judge, labels, batch: int, seed: int) -> dict:
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
           "nfe_batch": calls, "cost": den.cost / m, "ms_sample": 1000 * wall / m}
    if point.note == "constraint":
        res["constraint_ok"] = float((images <= 12).all(1).double().mean())
    return res


def write_table(ps: list[Point], out: Path, args, claims: list[str]) -> None:
    lines = ["# Samplers on the digits model: conditional accuracy against denoiser calls", "",
             f"Run `{args.run}`; {args.samples} class-conditional samples per point (classes in turn), batch "
             f"{args.batch}, seed {args.seed}; judge: logistic regression on the real training digits. "
             f"Reproduce: `.venv/bin/python benchmarks/digits_samplers.py {args.run} --samples {args.samples}`.", "",
             "NFE per sample counts the reads a sample took while it still had hidden pixels; a batch's calls are "
             "the most any of its rows took. Cost counts full reads of one sample: a light read of n of the 65 "
             "positions is n / 65, a guided read 2. Standard error of an accuracy: about "
             f"{100 * math.sqrt(0.9 * 0.1 / args.samples):.1f} points.", "",
             "## Claims", ""] + [f"- {c}" for c in claims] + ["", "## All points", "",
             "| sampler | family | accuracy | NFE / sample | calls / batch | cost / sample (full reads) "
             "| ms / sample |",
             "|---|---|---|---|---|---|---|"]
    for p in ps:
        m = p.metrics
        extra = f" (constraint held in {100 * m['constraint_ok']:.0f}%)" if "constraint_ok" in m else ""
        lines.append(f"| {p.name}{extra} | {p.family} | {m['accuracy']:.3f} ± {m['se']:.3f} | "
                     f"{m['nfe_sample']:.1f} | {m['nfe_batch']} | {m['cost']:.2f} | {m['ms_sample']:.2f} |")
    lines += ["", "![accuracy against NFE and cost](samplers_nfe.png)", ""]
    (out / "samplers_nfe.md").write_text("\n".join(lines))


def plot(ps: list[Point], out: Path, reference: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    families = list(dict.fromkeys(p.family for p in ps))
    cmap = plt.get_cmap("tab20")
    for ax, key, label in ((axes[0], "nfe_sample", "denoiser reads per sample (NFE)"),
                           (axes[1], "cost", "cost per sample (full reads; light read = n/65, guided = 2)")):
        for i, fam in enumerate(families):
            pts = sorted((p for p in ps if p.family == fam), key=lambda p: p.metrics[key])
            ax.plot([p.metrics[key] for p in pts], [p.metrics["accuracy"] for p in pts], "o-", ms=4,
                    color=cmap(i % 20), label=fam)
        ax.axhline(reference, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("conditional accuracy (judge)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.suptitle("digits: every sampler, accuracy against reads (dashed: MaskGIT 12 steps)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(out / "samplers_nfe.png", dpi=120)


def claims(ps: list[Point]) -> list[str]:
    by = {p.name: p.metrics for p in ps}
    ref = by["MaskGIT 12"]
    out = []
    thresholds = [p for p in ps if p.family.startswith("threshold")]
    good = [p for p in thresholds if p.metrics["accuracy"] >= ref["accuracy"]]
    if good:
        best = min(good, key=lambda p: p.metrics["nfe_sample"])
        out.append(f"Threshold decoding: `{best.name}` reaches {best.metrics['accuracy']:.3f} (MaskGIT 12: "
                   f"{ref['accuracy']:.3f}) with {best.metrics['nfe_sample']:.1f} reads per sample against 12, "
                   f"{12 / best.metrics['nfe_sample']:.2f}x fewer "
                   f"({ref['nfe_batch'] / best.metrics['nfe_batch']:.2f}x "
                   f"fewer calls per batch: {best.metrics['nfe_batch']} against 12).")
    else:
        best = max(thresholds, key=lambda p: p.metrics["accuracy"])
        out.append(f"Threshold decoding did not reach MaskGIT 12 ({ref['accuracy']:.3f}); best: `{best.name}` "
                   f"{best.metrics['accuracy']:.3f} at {best.metrics['nfe_sample']:.1f} reads per sample.")
    for steps in (8, 12, 16):
        c, f = by[f"ReCAP {steps} (cached)"], by[f"ReCAP {steps} (full reads)"]
        out.append(f"ReCAP {steps} base steps: cached {c['accuracy']:.3f} at cost {c['cost']:.2f} "
                   f"({c['ms_sample']:.2f} ms) against the same schedule read fully {f['accuracy']:.3f} at cost "
                   f"{f['cost']:.2f} ({f['ms_sample']:.2f} ms): {f['cost'] / c['cost']:.2f}x cheaper.")
    mg = sorted((p for p in ps if p.family == "MaskGIT"), key=lambda p: p.metrics["cost"])
    for steps in (8, 12, 16):
        c, m = by[f"ReCAP {steps} (cached)"], by[f"MaskGIT {steps}"]
        out.append(f"ReCAP {steps} (cached) against MaskGIT {steps}: {c['accuracy']:.3f} vs {m['accuracy']:.3f} at "
                   f"cost {c['cost']:.2f} vs {m['cost']:.2f} full reads, {c['ms_sample']:.2f} vs "
                   f"{m['ms_sample']:.2f} ms.")
    for steps in (12, 16):
        c = by[f"ReCAP {steps} (cached)"]
        match = next((p for p in mg if p.metrics["accuracy"] >= c["accuracy"] - p.metrics["se"]), mg[-1])
        out.append(f"ReCAP {steps} (cached, {c['accuracy']:.3f}) against plain MaskGIT at equal quality "
                   f"(`{match.name}`, {match.metrics['accuracy']:.3f}): cost per sample {c['cost']:.2f} vs "
                   f"{match.metrics['cost']:.2f} full reads, {c['ms_sample']:.2f} vs "
                   f"{match.metrics['ms_sample']:.2f} ms.")
    for steps in (8, 12):
        r, f = by[f"ENAT {steps} (reuse)"], by[f"ENAT {steps} (full reads)"]
        out.append(f"ENAT-style reuse, {steps} steps, on a network not trained for it: {r['accuracy']:.3f} at cost "
                   f"{r['cost']:.2f} vs full reads {f['accuracy']:.3f} at cost {f['cost']:.2f}.")
    for s in (8, 12, 16):
        r, lc = by[f"RCR {s}"], by[f"LLaDA low-conf {s}"]
        out.append(f"RCR {s} steps {r['accuracy']:.3f} vs LLaDA low-confidence remasking {lc['accuracy']:.3f} "
                   f"(same blocks and steps).")
    for name in ("MaskGIT 12 + CFG 2", "MaskGIT 12 + CFG 1->3", "MaskGIT 12 + CFG 3->1"):
        out.append(f"{name}: {by[name]['accuracy']:.3f} vs {ref['accuracy']:.3f} unguided (cost 24 vs 12).")
    f, a = by["first-hitting"], by["ancestral 128"]
    out.append(f"First-hitting {f['accuracy']:.3f} with {f['nfe_batch']} calls per batch vs ancestral 128 steps "
               f"{a['accuracy']:.3f} with {a['nfe_batch']} calls ({a['nfe_batch'] / f['nfe_batch']:.1f}x), "
               f"{a['ms_sample'] / f['ms_sample']:.1f}x the wall time.")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a trained digits run directory")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    ap.add_argument("--replot", action="store_true", help="rewrite table and figure from the saved JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, cfg, objective = load_run(Path(args.run))
    model = objective.model.eval()
    judge = digit_classifier(digits.load("train"))
    labels = torch.arange(args.samples) % digits.CLASSES
    ps = points(cfg.sampler_object())
    if args.replot:  # tables and figure again from the saved measurements
        saved = json.loads((Path(args.out) / "samplers_nfe.json").read_text())
        for p in ps:
            p.metrics = saved[p.name]
        return report(ps, Path(args.out), args)
    for p in ps:
        p.metrics |= measure(p, model, judge, labels, args.batch, args.seed)
        m = p.metrics
        print(f"{p.name:28s} acc {m['accuracy']:.3f}  NFE/sample {m['nfe_sample']:6.1f}  "
              f"calls/batch {m['nfe_batch']:5d}  cost {m['cost']:6.2f}  {m['ms_sample']:6.2f} ms/sample", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samplers_nfe.json").write_text(json.dumps({p.name: p.metrics for p in ps}, indent=1))
    report(ps, out, args)


def report(ps: list[Point], out: Path, args) -> None:
    found = claims(ps)
    print("\n".join(found))
    write_table(ps, out, args, found)
    plot(ps, out, next(p for p in ps if p.name == "MaskGIT 12").metrics["accuracy"])
    print(f"wrote {out / 'samplers_nfe.md'} and {out / 'samplers_nfe.png'}")


if __name__ == "__main__":
    main()
