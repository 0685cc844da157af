"""Training-step time of our MAE against Hugging Face's `ViTMAEForPreTraining`, same configuration,
steps interleaved in one process (so all see the same machine load), in float32 and in bf16 autocast;
then our drop-hidden encoder against replace-with-mask-token at the same ratio.

    .venv/bin/python benchmarks/mae_vs_transformers.py --threads 2          # about 1 minute on 2 CPU cores
    .venv/bin/python benchmarks/mae_vs_transformers.py --precision fp32 --steps 40

Configuration: 32x32 single-channel images, patch 4 (64 patches), width 192, depth 6, 3 heads,
MLP 768, decoder width 128, depth 2, 4 heads, mask ratio 0.75, norm-pix targets, batch 64, fused
AdamW. One step = mask + forward + backward + optimizer step. Precisions:
- fp32: everything in float32 (the same loss to 1e-5: tests/test_mae_vs_transformers.py);
- bf16: the forward pass under `torch.autocast("cpu", torch.bfloat16)`, backward and optimizer
  outside it, weights float32 (what `TrainConfig(precision="bf16")` does). Pays on CPUs with AMX.
transformers runs with both of its attention implementations, `sdpa` (its default) and `eager`.
Reports the median ms/step, wall clock and CPU time of the process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe, has_bf16_matrix_units

from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.vitmae import to_vitmae_state_dict, vitmae_config_kwargs
from unmask.objectives.mae import MaskedAutoencoding
from unmask.train.distributed import autocast

RATIO = 0.75
CPU = torch.device("cpu")
CONFIG = MAEConfig(image_size=(32, 32), channels=1, patch=4, dim=192, depth=6, heads=3, mlp_ratio=4.0,
                   decoder_dim=128, decoder_depth=2, decoder_heads=4, cls_token=True)


def optimizer(params):
    """The same AdamW for every model: fused, so per-parameter loop overhead does not hide model cost."""
    return torch.optim.AdamW(list(params), lr=1e-4, fused=True)


def ours(hide: str = "drop", compile: bool = False, precision: str = "fp32"):
    torch.manual_seed(0)
    model = MaskedAutoencoder(MAEConfig(**{**CONFIG.to_dict(), "image_size": (32, 32), "hide": hide}))
    objective = MaskedAutoencoding(model, ratio=RATIO, norm_pix=True)
    if compile:
        objective.model = torch.compile(model)
    opt = optimizer(objective.parameters())
    g = torch.Generator().manual_seed(0)

    def step(images):
        with autocast(CPU, precision):
            loss, _ = objective({"images": images}, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def theirs(compile: bool = False, precision: str = "fp32", attention: str = "sdpa"):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    config = ViTMAEConfig(**vitmae_config_kwargs(CONFIG, mask_ratio=RATIO, norm_pix=True),
                          attn_implementation=attention)
    model = ViTMAEForPreTraining(config)
    model.load_state_dict(to_vitmae_state_dict(MaskedAutoencoder(CONFIG)))
    model.train()
    forward = torch.compile(model) if compile else model
    opt = optimizer(p for p in model.parameters() if p.requires_grad)

    def step(images):
        with autocast(CPU, precision):
            loss = forward(pixel_values=images).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def race(steps: dict, batch: int, n: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median ms/step of each named step function, run in turn, one step each per round: wall time,
    and CPU time of this process (with one thread, CPU time ignores the time other programs on a
    shared machine take the core away)."""
    images = torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for i in range(warmup + n):
        for name, fn in steps.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn(images)
            if i >= warmup:
                wall[name].append((time.perf_counter() - w0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in steps}


def report(title: str, t: dict, a: str, b: str) -> dict:
    """Print b's time over a's for wall and CPU time; return the numbers."""
    out = {}
    for kind in ("wall", "cpu"):
        ratio = t[b][kind] / t[a][kind]
        print(f"{title} [{kind:4s}]  {a} {t[a][kind]:7.1f} ms   {b} {t[b][kind]:7.1f} ms   speed-up {ratio:.2f}x")
        out[f"{a}_{kind}_ms"], out[f"{b}_{kind}_ms"], out[f"speedup_{kind}"] = t[a][kind], t[b][kind], ratio
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is a fair clock on a "
                                                           "shared machine); 0 keeps torch's default")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (ours and theirs alike)")
    p.add_argument("--force-bf16", action="store_true", help="time bf16 even without bf16 matrix units")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [x for x in args.precision.split(",") if x]
    if set(precisions) - {"fp32", "bf16"}:
        p.error(f"--precision takes fp32 and bf16, got {args.precision}")
    print(describe())
    print(f"batch {args.batch}, {args.steps} steps{', compiled' if args.compile else ', eager'}")
    if "bf16" in precisions and not has_bf16_matrix_units() and not args.force_bf16:
        precisions.remove("bf16")
        print("bf16 skipped: this CPU has no bf16 matrix units, so bf16 is emulated and slower than fp32 "
              "(--force-bf16 runs it anyway)")
    result = {}
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed: pip install 'unmask[bench]'")
    else:
        for precision in precisions:
            steps = {"unmask": ours("drop", args.compile, precision),
                     "transformers-sdpa": theirs(args.compile, precision, "sdpa"),
                     "transformers-eager": theirs(args.compile, precision, "eager")}
            t = race(steps, args.batch, args.steps)
            for other in ("transformers-sdpa", "transformers-eager"):
                result[f"{precision}_vs_{other}"] = report(f"MAE train step, {precision}", t, "unmask", other)
    t = race({"drop": ours("drop", args.compile), "replace": ours("replace", args.compile)}, args.batch, args.steps)
    result["drop_vs_replace"] = report(f"ratio {RATIO}, fp32", t, "drop", "replace")
    return result


if __name__ == "__main__":
    main()
