"""MAR over continuous point-group tokens (MAR-3D, Chen et al. 2025, arXiv:2503.20519; MAR, Li et al. 2024,
arXiv:2406.11838) against the same transformer over k-means-quantised tokens with a cross-entropy head,
at equal training steps, batch and width, 3 seeds; unconditional generation of the 8 parametric shapes.

    .venv/bin/python benchmarks/mar_points.py                 # 3 seeds, both methods, floors, table
    .venv/bin/python benchmarks/mar_points.py --seeds 0 --steps 100 --samples 40 --refs 40   # a quick look

Tokens: each cloud (512 points) is cut into G = 32 groups of k = 16 points (FPS + kNN); a token is the
group's centre and an 8-number latent of its shape from a point-group autoencoder trained first
(Chamfer), standardised (`nn/point_latents.py`). The baseline quantises the same tokens with k-means
(`--codes` centroids) and decodes codes through the centroids. Both generate by random-order reveal
with MaskGIT's cosine counts over `--gen-steps` steps; MAR draws each revealed token with its
diffusion head (`--head-steps` DDPM steps, its x0 estimates clamped to the training tokens' range: improved
DDPM's clip_denoised, off in MAR; unclamped, the briefly trained head's draws diverge), the baseline draws a
code (MaskGIT sampler, random order). Both at temperature 1.

Figure, on clouds cut down to `--eval-points` points by FPS: MMD-CD (mean over held-out clouds of the
Chamfer distance to the nearest sample; lower is better), fidelity (mean over samples of the distance
to the nearest held-out cloud), COV (share of held-out clouds that are some sample's nearest), and
the number of shape classes among the samples' nearest held-out clouds. Floors: training clouds as
"samples", and the same training clouds passed through the continuous tokens and the k-means codes.

Runs are kept under --runs and reused (the Trainer resumes from its final checkpoint; each generation
writes result.json), so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import spread
import torch
from safetensors.torch import load_file, save_file

from unmask.data.points import SHAPES, load
from unmask.nn.chamfer import chamfer_l2
from unmask.nn.mae import MAEConfig
from unmask.nn.point_groups import farthest_point_sample, gather_points, group_points
from unmask.nn.point_latents import GroupAutoencoder, PointLatents
from unmask.nn.point_tokenizer import kmeans, nearest
from unmask.objectives.mar import DiscreteMAR, GroupAutoencoding, MaskedAutoregression
from unmask.sampling import generate
from unmask.sampling.mar import MARSampler, generate_continuous
from unmask.sampling.maskgit import MaskGITSampler
from unmask.schedules import Schedule
from unmask.train.trainer import TrainConfig, fit

METHODS = ("mar", "discrete")


def cut(clouds: torch.Tensor, points: int) -> torch.Tensor:
    """Float[M, P, 3] -> Float[M, points, 3] by farthest point sampling."""
    return gather_points(clouds, farthest_point_sample(clouds, points))


def chamfer_matrix(samples: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Float[S, P, 3], Float[R, P, 3] -> Float[S, R] Chamfer-L2 distances."""
    return torch.stack([chamfer_l2(s.expand(len(refs), -1, -1), refs) for s in samples])


def scores(samples: torch.Tensor, refs: torch.Tensor, ref_labels: torch.Tensor, points: int) -> dict:
    d = chamfer_matrix(cut(samples, points), refs)  # [S, R]
    nearest_ref = d.argmin(1)
    return {"mmd_cd": d.amin(0).mean().item(), "fidelity_cd": d.amin(1).mean().item(),
            "cov": len(set(nearest_ref.tolist())) / d.shape[1],
            "classes": len(set(ref_labels[nearest_ref].tolist()))}


def config(args) -> MAEConfig:
    return MAEConfig(image_size=(args.groups,), channels=3 + args.latent, patch=1, dim=args.dim, depth=args.depth,
                     heads=4, decoder_dim=args.dim, decoder_depth=args.decoder_depth, decoder_heads=4)


def train_config(args, steps: int, batch: int, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, lr=args.lr, warmup=min(50, steps // 10), seed=seed,
                       log_every=max(steps // 4, 1), precision="fp32")


def tokenizer(args, train_groups, runs: Path) -> tuple[PointLatents, torch.Tensor]:
    """The group autoencoder (trained once, seed 0) and the k-means codebook over its tokens."""
    torch.manual_seed(0)
    ae = GroupAutoencoder(latent=args.latent, group_size=args.group_size)
    data = {"groups": train_groups.points.reshape(-1, args.group_size, 3)}
    settings = {"latent": args.latent, "group_size": args.group_size, "steps": args.ae_steps}
    fit(GroupAutoencoding(ae), data, train_config(args, args.ae_steps, 256, 0), runs / "ae", settings, progress=False)
    latents = PointLatents(ae).fit(train_groups)
    book = runs / f"codebook-{args.codes}.safetensors"
    if not book.exists():
        tokens = latents.encode(train_groups).reshape(-1, 3 + args.latent)
        save_file({"codebook": kmeans(tokens, args.codes, generator=torch.Generator().manual_seed(0))}, book)
    return latents, load_file(book)["codebook"]


def train_and_sample(method: str, seed: int, args, tokens, codebook, latents, refs, ref_labels, runs: Path) -> dict:
    out = runs / f"{method}-s{seed}"
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    torch.manual_seed(seed)
    cfg = config(args)
    if method == "mar":
        model = MaskedAutoregression(cfg, head_width=args.head_width, head_depth=3, sampling_steps=args.head_steps)
        data = {"tokens": tokens}
    else:
        model = DiscreteMAR(cfg, codebook)
        data = {"codes": nearest(tokens.reshape(-1, cfg.channels), codebook).view(tokens.shape[:2])}
    settings = {"method": method, **{k: v for k, v in vars(args).items() if k not in ("seeds", "runs")}}
    t0 = time.process_time()
    fit(model, data, train_config(args, args.steps, args.batch, seed), out, settings, progress=False)
    train_cpu = time.process_time() - t0
    model.eval()
    g = torch.Generator().manual_seed(10_000 + seed)
    t0 = time.process_time()
    if method == "mar":
        hidden = torch.ones(args.samples, args.groups, dtype=torch.bool)
        canvas = torch.zeros(args.samples, args.groups, cfg.channels)
        # x0 estimates clamped to the training tokens' range (improved DDPM's clip_denoised; MAR has it off)
        sampler = MARSampler(args.gen_steps, Schedule("cosine"), clip=float(tokens.abs().max()))
        gen = generate_continuous(model, canvas, hidden, sampler, generator=g)
        sampled = gen.tokens
    else:
        k = codebook.shape[0]
        canvas = torch.full((args.samples, args.groups), k)
        gen = generate(model.logits, canvas, MaskGITSampler(args.gen_steps, Schedule("cosine"), order="random"),
                       mask_id=k, generator=g)
        sampled = codebook[gen.tokens]
    sample_cpu = time.process_time() - t0
    result = {"method": method, "seed": seed, **scores(latents.decode(sampled), refs, ref_labels, args.eval_points),
              "train_cpu_s": train_cpu, "sample_cpu_s": sample_cpu}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{method:8s} seed {seed}: MMD-CD {result['mmd_cd']:.5f}  COV {result['cov']:.3f}  "
          f"fidelity {result['fidelity_cd']:.5f}  classes {result['classes']}  train {train_cpu:.0f} s  "
          f"sample {sample_cpu:.0f} s (CPU)", flush=True)
    return result


def floors(args, train, train_groups, latents, codebook, refs, ref_labels) -> dict[str, dict]:
    pick = torch.randperm(len(train.points), generator=torch.Generator().manual_seed(1))[: args.samples]
    sub = type(train_groups)(train_groups.points[pick], train_groups.centres[pick])
    tokens = latents.encode(sub)
    codes = nearest(tokens.reshape(-1, tokens.shape[-1]), codebook).view(tokens.shape[:2])
    return {"training clouds": scores(train.points[pick], refs, ref_labels, args.eval_points),
            "training clouds through continuous tokens": scores(latents.decode(tokens), refs, ref_labels,
                                                                args.eval_points),
            "training clouds through k-means codes": scores(latents.decode(codebook[codes]), refs, ref_labels,
                                                            args.eval_points)}


def mean_std(xs: list[float]) -> str:
    """mean +- population std, as docs/points.md reports them."""
    return spread.mean_std(xs, ".5f", population=True)


def table(results: dict[str, list[dict]], base: dict[str, dict], args) -> str:
    lines = ["| method | MMD-CD (lower better) | COV (higher better) | fidelity CD | classes hit | MMD-CD per seed "
             "| COV per seed | train CPU s | sample CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        per_mmd = ", ".join(f"{r['mmd_cd']:.5f}" for r in rows)
        per_cov = ", ".join(f"{r['cov']:.3f}" for r in rows)
        cov = [r["cov"] for r in rows]
        lines.append(f"| {name} | {mean_std([r['mmd_cd'] for r in rows])} | "
                     f"{statistics.mean(cov):.3f} +- {statistics.pstdev(cov):.3f} | "
                     f"{mean_std([r['fidelity_cd'] for r in rows])} | "
                     f"{', '.join(str(r['classes']) for r in rows)} | "
                     f"{per_mmd} | {per_cov} | "
                     f"{statistics.mean(r['train_cpu_s'] for r in rows):.0f} | "
                     f"{statistics.mean(r['sample_cpu_s'] for r in rows):.0f} |")
    for name, r in base.items():
        lines.append(f"| floor: {name} | {r['mmd_cd']:.5f} | {r['cov']:.3f} | {r['fidelity_cd']:.5f} | "
                     f"{r['classes']} | | | | |")
    if set(METHODS) <= set(results):
        mar, disc = results["mar"], results["discrete"]
        d_mmd = [a["mmd_cd"] - b["mmd_cd"] for a, b in zip(mar, disc, strict=True)]
        d_cov = [a["cov"] - b["cov"] for a, b in zip(mar, disc, strict=True)]
        lines.append("")
        lines.append(f"Paired delta MAR - discrete per seed: MMD-CD {', '.join(f'{d:+.5f}' for d in d_mmd)}; "
                     f"COV {', '.join(f'{d:+.3f}' for d in d_cov)}")
    lines.append(f"\n{args.samples} samples against {args.refs} held-out clouds ({args.refs // len(SHAPES)} "
                 f"per shape), Chamfer on {args.eval_points} FPS points; {args.steps} steps of {args.batch} clouds, "
                 f"width {args.dim}, encoder depth {args.depth}, decoder depth {args.decoder_depth}; {args.gen_steps} "
                 f"reveal steps; MAR head width {args.head_width}, {args.head_steps} DDPM steps; {args.codes} codes.")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--head-width", type=int, default=64)
    p.add_argument("--head-steps", type=int, default=50)
    p.add_argument("--gen-steps", type=int, default=16)
    p.add_argument("--codes", type=int, default=512)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--ae-steps", type=int, default=400)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--refs", type=int, default=200)
    p.add_argument("--eval-points", type=int, default=256)
    p.add_argument("--runs", type=Path, default=Path("runs/mar-points"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from machine import describe
    print(describe(), flush=True)
    train = load("train", per_class=250, points=args.points, seed=0)
    test = load("test", per_class=100, points=args.points, seed=0)
    per = args.refs // len(SHAPES)
    keep = torch.cat([torch.nonzero(test.labels == c)[:per, 0] for c in range(len(SHAPES))])
    refs, ref_labels = cut(test.points[keep], args.eval_points), test.labels[keep]
    train_groups = group_points(train.points, args.groups, args.group_size)
    latents, codebook = tokenizer(args, train_groups, args.runs)
    tokens = latents.encode(train_groups)  # [M, G, 3 + d]
    results = {m: [train_and_sample(m, s, args, tokens, codebook, latents, refs, ref_labels, args.runs)
                   for s in args.seeds] for m in args.methods}
    print(table(results, floors(args, train, train_groups, latents, codebook, refs, ref_labels), args))


if __name__ == "__main__":
    main()
