"""Approximate joint sampling (Bansal & Sanghavi 2025, arXiv:2509.22738, P18), measured exactly on a toy.

A tiny masked model (V = 3, N = 4) is trained on the correlated 81-sequence joint of `toys.ExactJoint`
and frozen; its own sequential decoding (one token per full read, most confident proposal first) is
the reference. At K tokens per full read, K = 2 and 4, we compare independent parallel decoding (K
proposals of one read committed at once) with the joint sampler layer (trained by `JointDistillation`
with K = 4, used at both K): total variation to the reference, computed exactly by enumerating every
decoding path, for 3 seeds (model and layer both reseeded). Full reads per sample: ceil(4 / K).

With `--code RUN` (a trained `mdlm-code` run folder), the same on code: a layer is trained on the run's
training chunks (`--code-layer-steps`, k = 4), then measured on held-out chunks by the mean KL to the
model's sequential conditionals after 1..3 reveals (layer against the model's own logits before the
reveals, which independent decoding uses), and by function-body infilling (`eval/code.py`: share of
files that parse, body tokens equal to the original, full reads per batch) at K = 1, 2, 4.

    .venv/bin/python benchmarks/joint_sampling.py [--seeds 0 1 2] [--model-steps 400] [--layer-steps 300]
    .venv/bin/unmask train mdlm-code --out runs/mdlm-code
    .venv/bin/python benchmarks/joint_sampling.py --seeds --code runs/mdlm-code
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from joint_toy import exact_law, toy_layer, toy_model, tv  # noqa: E402
from toys import ExactJoint  # noqa: E402


def code_figures(folder: str, steps: int, batch: int = 32, cases: int = 40, seed: int = 0) -> None:
    from unmask.eval import code as code_eval
    from unmask.nn.joint_layer import JointDenoiser, JointLayer
    from unmask.objectives.joint_distill import JointDistillation
    from unmask.recipes import load_run
    from unmask.sampling.joint import JointSampler

    recipe, objective, run = load_run(Path(folder), progress=False)
    model = objective.model.eval().requires_grad_(False)
    corpus = recipe.corpus(run)
    train = corpus.train.tokens
    torch.manual_seed(seed)
    layer = JointLayer(model)
    distill = JointDistillation(model, layer, 4)
    opt = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    for step in range(steps):
        rows = torch.randint(len(train), (batch,), generator=g)
        loss = distill({"tokens": train[rows]}, g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            print(f"code: layer step {step + 1}, KL {loss.item():.4f}", flush=True)
    print(f"code: layer trained {steps} steps of {batch} chunks in {time.perf_counter() - t:.0f} s")
    layer.eval()
    held = recipe.held_out(corpus).tokens
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        kl = [distill({"tokens": x}, g).metrics for x in held.split(64)]
    print(f"code: held-out KL to sequential conditionals (nats per hidden token, {len(held)} chunks): layer "
          f"{statistics.mean(m['loss'].item() for m in kl):.4f}, "
          f"independent {statistics.mean(m['kl_independent'].item() for m in kl):.4f}")
    length, mask_id = recipe.settings.data.length, recipe.settings.data.vocab_size
    found = code_eval.infill_cases(corpus, length, cases)
    print(f"code: infilling {len(found)} function bodies; parse share, token accuracy, full reads per batch")
    plain, joint = model, JointDenoiser(model, layer)
    for name, den, sampler in [("sequential K=1", plain, JointSampler(1)),
                               ("independent K=2", plain, JointSampler(2, mode="independent")),
                               ("joint layer K=2", joint, JointSampler(2)),
                               ("independent K=4", plain, JointSampler(4, mode="independent")),
                               ("joint layer K=4", joint, JointSampler(4))]:
        res = code_eval.infill(den, found, sampler, corpus, length, mask_id, seed)
        print(f"  {name:>16}: parse {res.share:.3f}, token accuracy {res.token_accuracy:.3f}, reads {res.nfe:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--model-steps", type=int, default=400)
    parser.add_argument("--layer-steps", type=int, default=300)
    parser.add_argument("--code", default="", help="a trained mdlm-code run folder")
    parser.add_argument("--code-layer-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: a second contended thread costs more than it brings
    if args.code:
        code_figures(args.code, args.code_layer_steps)
    if not args.seeds:
        return
    rows: dict[str, list[float]] = {}
    print(f"exact TV to the model's own sequential decoding (K = 1); model {args.model_steps} steps, "
          f"layer {args.layer_steps} steps (k = 4)")
    print(f"{'seed':>4} {'ind K=2':>8} {'joint K=2':>9} {'ind K=4':>8} {'joint K=4':>9} {'seq vs data':>11} {'s':>5}")
    for seed in args.seeds:
        t = time.perf_counter()
        model = toy_model(seed, steps=args.model_steps)
        layer = toy_layer(model, 4, seed, steps=args.layer_steps)
        reference = exact_law(model, 1)
        got = {"ind K=2": tv(exact_law(model, 2, "independent"), reference),
               "joint K=2": tv(exact_law(model, 2, "joint", layer), reference),
               "ind K=4": tv(exact_law(model, 4, "independent"), reference),
               "joint K=4": tv(exact_law(model, 4, "joint", layer), reference),
               "seq vs data": tv(reference, ExactJoint().p)}
        for name, value in got.items():
            rows.setdefault(name, []).append(value)
        print(f"{seed:>4} " + " ".join(f"{v:>{max(8, len(n))}.4f}" for n, v in got.items())
              + f" {time.perf_counter() - t:5.1f}")
    print("mean " + " ".join(f"{statistics.mean(v):>{max(8, len(n))}.4f}" for n, v in rows.items()))


if __name__ == "__main__":
    main()
