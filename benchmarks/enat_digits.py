"""ENAT trained for its reuse (Ni et al. 2024, "ENAT: Rethinking Spatial-temporal Interactions in
Token-based Image Synthesis", arXiv:2411.06959, P20) against the plain MaskGIT network (Chang et al.
2022, arXiv:2202.04200) at equal training compute, on class-conditional digits (label token given,
64 pixel tokens hidden at a cosine-scheduled share; scikit-learn's 8x8 digits, training split).

Both networks: width 64, 4 heads, the same steps, batch, learning rate, warmup and seed, each trained
with the one `Trainer`. The MaskGIT network (`nn/masked_model.py`) has 4 blocks over all 65 tokens;
ENAT's (`nn/enat.py`) has 7 encoder blocks over the visible tokens and 2 decoder blocks over the
hidden ones, trained by `objectives/enat.py` (reuse simulated in half of the steps, one ratio per
batch). Its depths were chosen, before any sample was drawn, as the split whose measured training
FLOPs per step (forward + backward, the reuse steps' earlier read included) come closest to the
MaskGIT network's: 5.81 vs 5.77 GFLOP per 64 examples (+0.8%).

Every network samples with ENAT's step rule (`sampling/enat.py`, 8 steps, temperature 1, choice
temperature 1, the run's MaskGIT defaults): the MaskGIT network with full reads, ENAT's with reuse
(every read after the first encodes only the newly revealed tokens) and without (every read encodes
every visible token). Per point: Fréchet distance (`eval/quality.py`'s digit features) of 500
class-conditional samples (classes in turn) to the 1,437 training digits, conditional accuracy (the
logistic-regression judge of `eval/digits.py`), and sampling compute per sample in FLOPs (counted by
`torch.utils.flop_counter` with attention in its matmul form, so attention counts too) and in full
reads of the MaskGIT network.

    .venv/bin/python benchmarks/enat_digits.py                 # 3 seeds; runs/enat_digits/table.md
    .venv/bin/python benchmarks/enat_digits.py --seeds 0 --steps 50

Runs are kept under --runs (default runs/enat_digits/METHOD-sSEED) and reused when their result.json
exists, so an interrupted comparison resumes; the CPU time printed sums every run's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms
from spread import signed
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from unmask.data import digits
from unmask.eval.digits import conditional_canvas, digit_classifier
from unmask.eval.quality import digit_features, frechet_distance
from unmask.masking import RandomMask
from unmask.nn.enat import ENATConfig, ENATModel
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.enat import ENATTokenModeling
from unmask.objectives.masked_token import MaskedTokenModeling
from unmask.sampling import generate
from unmask.sampling.enat import ENATDenoiser, ENATSampler
from unmask.schedules import Schedule
from unmask.train.trainer import TrainConfig, fit

METHODS = ("maskgit", "enat")
PIXELS = RandomMask(("pixels",))  # the label is always given: class-conditional generation


def build(method: str, seed: int, args) -> torch.nn.Module:
    torch.manual_seed(seed)  # the weights' initialisation
    if method == "maskgit":
        cfg = ModelConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=args.dim, depth=args.depth, heads=4,
                          segment_vocab=digits.SEGMENT_VOCAB)
        return MaskedTokenModeling(MaskedTokenModel(cfg), PIXELS, Schedule("cosine"))
    cfg = ENATConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=args.dim, encoder_depth=args.encoder_depth,
                     decoder_depth=args.decoder_depth, heads=4, segment_vocab=digits.SEGMENT_VOCAB)
    return ENATTokenModeling(ENATModel(cfg), PIXELS, Schedule("cosine"), reuse_prob=args.reuse_prob)


def counted(fn):
    """(fn's result, its FLOPs): matmuls and attention (in its math form, which the counter sees)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_total_flops()


@torch.no_grad()
def sample_point(model, reuse: bool | None, labels, args, seed: int, judge, real) -> dict:
    """reuse None: the plain network, full reads; True / False: ENAT's network with / without reuse."""
    sampler = ENATSampler(args.sample_steps, temperature=1.0, choice_temperature=1.0, reuse=bool(reuse))
    den = model if reuse is None else ENATDenoiser(model)
    g = torch.Generator().manual_seed(1000 + seed)
    t, outs = time.process_time(), []
    for chunk in conditional_canvas(labels).split(250):
        outs.append(generate(den, chunk, sampler, mask_id=digits.MASK_ID, generator=g).tokens)
    cpu = time.process_time() - t
    images, _ = digits.decode(torch.cat(outs))
    hit = torch.from_numpy(judge.predict(images.numpy() / 16.0)) == labels
    # compute per sample, counted on a separate small batch (the same counts per row: every row hides 64)
    few = conditional_canvas(labels[:10])
    den = model if reuse is None else ENATDenoiser(model)
    _, flops = counted(lambda: generate(den, few, sampler, mask_id=digits.MASK_ID,
                                        generator=torch.Generator().manual_seed(0)))
    out = {"fd": frechet_distance(digit_features()(images), real), "accuracy": float(hit.double().mean()),
           "gflops_sample": flops / len(few) / 1e9, "ms_sample": 1000 * cpu / len(labels)}
    if reuse is not None:
        out["encoded_sample"] = float(torch.stack(den.encoded).sum() / len(few))  # encoder token reads
    return out


def run_one(method: str, seed: int, args, labels, judge, real) -> dict:
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build(method, seed, args)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed, log_every=50)
    c0 = time.process_time()
    fit(objective, {"tokens": digits.load("train").tokens}, tc, folder,
        {"method": method, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    train_cpu = time.process_time() - c0
    model = objective.model.eval()
    x = digits.load("train").tokens[:64]
    _, read = counted(lambda: model(x))  # one full read of every visible token, per sample
    result = {"method": method, "seed": seed, "train_cpu_s": train_cpu, "full_read_gflops": read / len(x) / 1e9}
    variants = {"maskgit": {"full": None}, "enat": {"reuse": True, "no_reuse": False}}[method]
    for name, reuse in variants.items():
        result[name] = sample_point(model, reuse, labels, args, seed, judge, real)
    result["cpu_s"] = time.process_time() - c0
    done.write_text(json.dumps(result, indent=1))
    print(f"{method:8s} seed {seed}: " + "; ".join(
        f"{name} FD {m['fd']:.3f} acc {m['accuracy']:.3f} {m['gflops_sample']:.3f} GFLOP/sample"
        for name, m in result.items() if isinstance(m, dict)) + f" ({result['cpu_s']:.0f} CPU s)", flush=True)
    return result


def table(results: dict, args) -> str:
    def col(method, variant, key):
        return [r[variant][key] for r in results[method]]

    full_read = statistics.mean([r["full_read_gflops"] for r in results["maskgit"]])
    rows = ["| figure | ENAT, reuse (ours) | baseline | paired delta per seed (ours - baseline) |", "|---|---|---|---|"]
    for base_method, base_variant, base_name in (("maskgit", "full", "MaskGIT network, full reads"),
                                                 ("enat", "no_reuse", "ENAT network, no reuse")):
        for key, label, fmt in (("fd", "Fréchet distance (lower is better)", ".3f"),
                                ("accuracy", "conditional accuracy", ".3f"),
                                ("gflops_sample", "sampling GFLOP per sample", ".3f")):
            ours, base = col("enat", "reuse", key), col(base_method, base_variant, key)
            rows.append(f"| {label}, vs {base_name} | {ms(ours, fmt)} | {ms(base, fmt)} | "
                        f"{signed([a - b for a, b in zip(ours, base, strict=True)], fmt)} |")
    reads = {f"{m}/{v}": statistics.mean(col(m, v, "gflops_sample")) / full_read
             for m, v in (("maskgit", "full"), ("enat", "reuse"), ("enat", "no_reuse"))}
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, warmup {args.warmup}, width {args.dim}; "
              f"MaskGIT depth {args.depth}, ENAT {args.encoder_depth} encoder + {args.decoder_depth} decoder blocks "
              f"(reuse_prob {args.reuse_prob}); {args.samples} samples, {args.sample_steps} steps of ENAT's rule; "
              f"seeds {', '.join(map(str, args.seeds))}")
    note = ("Sampling compute in MaskGIT full reads (one read of 65 tokens = "
            f"{full_read:.4f} GFLOP): " + ", ".join(f"{k} {v:.2f}" for k, v in reads.items()))
    return "\n".join(rows) + f"\n\n{note}.\n\nBudget (every method): {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--encoder-depth", type=int, default=7)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--reuse-prob", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--sample-steps", type=int, default=8)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--runs", type=Path, default=Path("runs/enat_digits"))
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    train = digits.load("train")
    judge, real = digit_classifier(train), digit_features()(train.images)
    labels = torch.arange(args.samples) % digits.CLASSES
    results = {m: [run_one(m, s, args, labels, judge, real) for s in args.seeds] for m in args.methods}
    runs_cpu = sum(r["cpu_s"] for rs in results.values() for r in rs)
    print(f"CPU time: {runs_cpu / 60:.1f} min in the runs (their own, kept in result.json), "
          f"{(time.process_time() - c0) / 60:.1f} min in this invocation", flush=True)
    if set(results) == set(METHODS):
        text = table(results, args)
        (args.runs / "table.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
