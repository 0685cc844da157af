"""How many constraint calls AWRS needs (Lipkin et al. 2025, "Fast Controlled Generation from Language
Models with Adaptive Weighted Rejection Sampling", arXiv:2504.05410, P24; `sampling/constrained.py`):
the paper's claim is an exact draw from p restricted to the valid tokens, with an unbiased weight
(an estimate of the valid mass Z), for far fewer constraint evaluations than token masking, which
tests all V tokens. Both draws are measured on the same distributions with the same seeds.

Toy (known distribution): V = 1024 tokens, logits 2 x N(0, 1) (float64), valid tokens taken in a
random order until their mass reaches a share of p (0.9, 0.5, 0.1, 0.03, 0.01). Per seed and share,
`--draws` draws by each method: constraint calls per token, TV of the draws to the exact restricted
distribution q = p [valid] / Z beside the TV of as many exact draws from q (the noise floor: mean and
sd over 20 multinomial replicates; the stated tolerance is TV <= floor mean + 4 floor sd), the mean
weight over Z (tolerance: 4 standard errors), and CPU microseconds per token (the constraint is a
list lookup here: the cost is the method's own).

Chorales (trained model, runs/chorales_vl/seed<s> of benchmarks/chorales_voice_leading.py; a seed
whose model is not trained yet is skipped): the voice-leading rule `NoParallels` (eval/voice_leading.py,
V = 66). (i) Contexts: the first window of each held-out chorale, soprano given, alto, tenor and bass
hidden at a random exact share in [0.1, 0.9] (Bach's own tokens elsewhere), 6 hidden places each;
the model's logits there; the rule's verdict on every token (V calls, once) gives the exact q. Then
`--context-draws` draws per context by each method with the verdicts cached (the rule is a pure
function of the context), scored as in the toy. (ii) End to end: the first `--pieces` held-out
chorales harmonised once with `ConstrainedSampler(NoParallels, 16 steps)` drawing by AWRS and by
token masking, the real rule called each time: calls per token, CPU per token (model included) and
the rule's share of it.

    .venv/bin/python benchmarks/awrs_efficiency.py              # seeds 0 1 2; runs/awrs_efficiency/
    .venv/bin/python benchmarks/awrs_efficiency.py --seeds 0 --draws 300 --context-draws 50 --pieces 1

Each (part, seed) result is kept as JSON under --runs and reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe
from spread import mean_std, signed

from unmask.data import music
from unmask.eval import music as music_eval
from unmask.eval.voice_leading import NoParallels
from unmask.recipes.chorales import HARMONISE, Chorales, fill_voices
from unmask.recipes.run import Run
from unmask.sampling.constrained import ConstrainedSampler, awrs, token_masking

METHODS = {"awrs": awrs, "masking": token_masking}
SHARES = (0.9, 0.5, 0.1, 0.03, 0.01)


def random_valid_set(p: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Bool[V]: tokens taken in random order until their mass reaches `share` of p (at least one)."""
    order = torch.randperm(len(p), generator=generator)
    take = p[order].cumsum(0) <= share
    take[0] = True
    valid = torch.zeros(len(p), dtype=torch.bool)
    valid[order[take]] = True
    return valid


def tv(counts: torch.Tensor, q: torch.Tensor) -> float:
    """Total variation between the empirical law of `counts` [V] and q [V]."""
    return 0.5 * (counts / counts.sum() - q).abs().sum().item()


def floor(q: torch.Tensor, k: int, generator: torch.Generator, replicates: int = 20) -> tuple[float, float]:
    """(mean, sd) of the TV of k exact draws from q to q: what sampling noise alone gives."""
    xs = [tv(torch.bincount(torch.multinomial(q, k, replacement=True, generator=generator), minlength=len(q))
             .double(), q) for _ in range(replicates)]
    return statistics.mean(xs), statistics.stdev(xs)


def draws(method: str, logits: torch.Tensor, allowed: list[bool], k: int, generator) -> dict:
    """k draws by `method` from logits [V] under the cached verdicts `allowed`."""
    t = time.process_time()
    out = [METHODS[method](logits, allowed.__getitem__, generator=generator) for _ in range(k)]
    cpu = time.process_time() - t
    if not all(allowed[d.token] for d in out):
        raise AssertionError(f"{method} drew a token the constraint refuses")
    return {"counts": torch.bincount(torch.tensor([d.token for d in out]), minlength=len(allowed)).double(),
            "calls": [d.calls for d in out], "weights": [math.exp(d.log_weight) for d in out], "cpu_s": cpu}


def compare(logits: torch.Tensor, valid: torch.Tensor, k: int, generator) -> dict:
    """Both methods on one distribution: calls, TV to q, noise floor, weight / Z, CPU per token."""
    p = logits.double().softmax(-1)
    z = float(p[valid].sum())
    q = torch.where(valid, p, 0.0) / z
    allowed = valid.tolist()
    out = {"z": z, "v": len(allowed)}
    out["floor_mean"], out["floor_sd"] = floor(q, k, generator)
    for m in METHODS:
        d = draws(m, logits, allowed, k, generator)
        w = torch.tensor(d["weights"], dtype=torch.float64) / z
        out[m] = {"calls_mean": statistics.mean(d["calls"]), "calls_max": max(d["calls"]), "tv": tv(d["counts"], q),
                  "weight_over_z": w.mean().item(), "weight_se": (w.std().item() if k > 1 else 0.0) / math.sqrt(k),
                  "cpu_us": 1e6 * d["cpu_s"] / k}
    return out


def toy(seed: int, args) -> dict:
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(args.vocab, generator=g, dtype=torch.float64)
    p = logits.softmax(0)
    return {"seed": seed, "shares": {str(s): compare(logits, random_valid_set(p, s, g), args.draws, g)
                                     for s in SHARES}}


class Counted:
    """A constraint that counts its calls and the CPU time spent in them."""

    def __init__(self, constraint):
        self.constraint, self.calls, self.seconds = constraint, 0, 0.0

    def __call__(self, tokens, position, token) -> bool:
        t = time.process_time()
        ok = self.constraint(tokens, position, token)
        self.seconds += time.process_time() - t
        self.calls += 1
        return ok


def contexts(model, test, rule: NoParallels, window: int, generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits [V], verdicts Bool[V]) at 6 hidden places of the first window of each held-out chorale,
    alto, tenor and bass hidden at a random exact share in [0.1, 0.9]."""
    canvas = torch.from_numpy(np.stack([music.window(c.tokens, 0, window) for c in test]))  # [C, 4, L]
    hidden = torch.zeros(canvas.shape, dtype=torch.bool)
    for row in hidden:
        share = 0.1 + 0.8 * torch.rand((), generator=generator, dtype=torch.float64).item()
        lower = torch.rand(3 * window, generator=generator).argsort()[: round(share * 3 * window)]
        row[1:].view(-1)[lower] = True
    canvas = canvas.masked_fill(hidden, music.MASK_ID).view(len(test), -1)  # [C, 4L]
    with torch.no_grad():
        logits = model(canvas)  # [C, 4L, V]
    out = []
    for c in range(len(test)):
        places = torch.nonzero(hidden[c].view(-1)).squeeze(1)
        for pos in places[torch.randperm(len(places), generator=generator)[:6]].tolist():
            out.append((logits[c, pos].double(),
                        torch.tensor([rule(canvas[c], pos, v) for v in range(music.VOCAB_SIZE)])))
    return out


def chorales(seed: int, args) -> dict | None:
    recipe = Chorales().with_overrides([f"train.seed={seed}", f"data.cache={args.cache}"])
    run = Run(args.chorales_runs / f"seed{seed}", progress=False)
    if run.trained_step() != recipe.settings.train.steps:
        return None
    model = recipe.load(run).model.eval()
    grid, window = recipe.settings.data.grid, recipe.settings.data.window
    _, test = recipe.split(run)
    g = torch.Generator().manual_seed(seed)
    rule = NoParallels(window)
    found = contexts(model, test, rule, window, g)
    per = [compare(logits, valid, args.context_draws, g) for logits, valid in found]
    out = {"seed": seed, "contexts": len(per), "z_mean": statistics.mean(c["z"] for c in per),
           "z_below_half": sum(c["z"] < 0.5 for c in per) / len(per),
           "floor_mean": statistics.mean(c["floor_mean"] for c in per),
           "floor_sd": math.sqrt(sum(c["floor_sd"] ** 2 for c in per)) / len(per)}  # sd of the mean over contexts
    binding = [c for c in per if c["z"] < 0.95]  # the rule refuses at least 5% of p's mass
    out["binding"] = {"contexts": len(binding),
                      "awrs_calls_mean": statistics.mean(c["awrs"]["calls_mean"] for c in binding) if binding else 0.0,
                      "z_mean": statistics.mean(c["z"] for c in binding) if binding else 1.0}
    for m in METHODS:
        out[m] = {k: statistics.mean(c[m][k] for c in per) for k in ("calls_mean", "tv", "weight_over_z", "cpu_us")}
        out[m]["weight_se"] = math.sqrt(sum(c[m]["weight_se"] ** 2 for c in per)) / len(per)
    pieces = [c.tokens for c in test[: args.pieces]]
    keys = [(c.tonic, c.minor) for c in test[: args.pieces]]
    out["end_to_end"] = {}
    for m in METHODS:
        counted = Counted(rule)
        t = time.process_time()
        generated = fill_voices(model, pieces, HARMONISE, ConstrainedSampler(counted, 16, draw=m),
                                torch.Generator().manual_seed(seed))
        cpu = time.process_time() - t
        s = music_eval.score(generated, steps_per_quarter=grid, real=pieces, keys=keys)
        out["end_to_end"][m] = {"calls": counted.calls, "cpu_s": cpu, "constraint_s": counted.seconds,
                                "parallels_per_100_beats": s["parallel_fifths_per_100_beats"]
                                + s["parallel_octaves_per_100_beats"]}
    tokens = out["end_to_end"]["masking"]["calls"] / music.VOCAB_SIZE  # token masking: V calls per token drawn
    for r in out["end_to_end"].values():
        r.update(tokens=tokens, calls_per_token=r["calls"] / tokens, cpu_ms_per_token=1e3 * r["cpu_s"] / tokens,
                 constraint_ms_per_token=1e3 * r["constraint_s"] / tokens)
    return out


def cached(path: Path, make):
    if path.exists():
        return json.loads(path.read_text())
    result = make()
    if result is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return result


def within(r: dict) -> bool:
    """Stated tolerances: TV at most the noise floor + 4 sd; mean weight / Z within 4 standard errors of 1."""
    return all(r[m]["tv"] <= r["floor_mean"] + 4 * r["floor_sd"] for m in METHODS) and \
        abs(r["awrs"]["weight_over_z"] - 1) <= 4 * r["awrs"]["weight_se"]


def over(rs: list[dict], *path: str, fmt: str = ".3f") -> str:
    """mean +- sd over seeds of the value at `path` in each result."""
    values = []
    for r in rs:
        for key in path:
            r = r[key]
        values.append(r)
    return mean_std(values, fmt)


def toy_table(results: list[dict], vocab: int, k: int) -> str:
    lines = [f"Toy: V = {vocab}, logits 2 x N(0, 1), {k} draws per method, seeds "
             f"{[r['seed'] for r in results]} (mean +- sd over seeds):", "",
             "| valid share | Z | AWRS calls / token | token masking calls / token | AWRS calls per seed | "
             "TV AWRS | TV masking | TV of exact draws (floor) | AWRS weight / Z | CPU us / token AWRS | "
             "CPU us / token masking | within tolerance (all seeds) |", "|---" * 12 + "|"]
    for s in SHARES:
        rs = [r["shares"][str(s)] for r in results]
        per_seed = ", ".join(f"{r['awrs']['calls_mean']:.1f}" for r in rs)
        cells = [str(s), over(rs, "z", fmt=".4f"), over(rs, "awrs", "calls_mean", fmt=".1f"), str(vocab), per_seed,
                 over(rs, "awrs", "tv"), over(rs, "masking", "tv"), over(rs, "floor_mean"),
                 over(rs, "awrs", "weight_over_z"), over(rs, "awrs", "cpu_us", fmt=".0f"),
                 over(rs, "masking", "cpu_us", fmt=".0f"), str(all(within(r) for r in rs))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paired per seed, AWRS - token masking:", "", "| valid share | calls / token | TV | CPU us / token |",
              "|---|---|---|---|"]
    for s in SHARES:
        rs = [r["shares"][str(s)] for r in results]
        deltas = [signed([r["awrs"][key] - r["masking"][key] for r in rs], fmt)
                  for key, fmt in (("calls_mean", ".1f"), ("tv", ".3f"), ("cpu_us", ".0f"))]
        lines.append(f"| {s} | " + " | ".join(deltas) + " |")
    return "\n".join(lines)


def chorales_table(results: list[dict], k: int) -> str:
    v = music.VOCAB_SIZE
    lines = [f"Chorales, NoParallels (V = {v}), trained models of seeds {[r['seed'] for r in results]}:", "",
             "| seed | contexts | mean Z | share Z < 0.5 | AWRS calls / token | masking calls / token | TV AWRS | "
             "TV masking | TV floor | AWRS weight / Z (SE) | CPU us / token AWRS | CPU us / token masking | "
             "within tolerance | contexts with Z < 0.95: n, mean Z, AWRS calls / token |", "|---" * 14 + "|"]
    for r in results:
        a, m = r["awrs"], r["masking"]
        lines.append(f"| {r['seed']} | {r['contexts']} | {r['z_mean']:.3f} | {r['z_below_half']:.2f} | "
                     f"{a['calls_mean']:.2f} | {m['calls_mean']:.0f} | {a['tv']:.3f} | {m['tv']:.3f} | "
                     f"{r['floor_mean']:.3f} | {a['weight_over_z']:.3f} ({a['weight_se']:.3f}) | {a['cpu_us']:.0f} | "
                     f"{m['cpu_us']:.0f} | {within(r)} | {r['binding']['contexts']}, {r['binding']['z_mean']:.3f}, "
                     f"{r['binding']['awrs_calls_mean']:.2f} |")
    lines += ["", f"({k} draws per context and method; TVs are means over contexts; cached verdicts.)", "",
              "End to end (real rule called each time; CPU includes the model):", "",
              "| seed | tokens drawn | calls / token AWRS | calls / token masking | CPU ms / token AWRS | "
              "CPU ms / token masking | rule ms / token AWRS | rule ms / token masking | parallels / 100 beats "
              "AWRS, masking |", "|---" * 9 + "|"]
    for r in results:
        a, m = r["end_to_end"]["awrs"], r["end_to_end"]["masking"]
        cells = [str(r["seed"]), f"{a['tokens']:.0f}", f"{a['calls_per_token']:.2f}", f"{m['calls_per_token']:.0f}",
                 f"{a['cpu_ms_per_token']:.2f}", f"{m['cpu_ms_per_token']:.2f}", f"{a['constraint_ms_per_token']:.2f}",
                 f"{m['constraint_ms_per_token']:.2f}",
                 f"{a['parallels_per_100_beats']:.2f}, {m['parallels_per_100_beats']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(results) > 1:
        e2e = [r["end_to_end"] for r in results]
        cells = ["mean +- sd", "", over(e2e, "awrs", "calls_per_token", fmt=".2f"), str(v),
                 over(e2e, "awrs", "cpu_ms_per_token", fmt=".2f"), over(e2e, "masking", "cpu_ms_per_token", fmt=".2f"),
                 over(e2e, "awrs", "constraint_ms_per_token", fmt=".2f"),
                 over(e2e, "masking", "constraint_ms_per_token", fmt=".2f"), ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\n(CPU per token: the whole harmonisation, model included, over tokens drawn; rule: CPU inside "
                 "the constraint.)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--draws", type=int, default=3000, help="toy draws per method, seed and share")
    p.add_argument("--context-draws", type=int, default=200, help="chorales draws per method and context")
    p.add_argument("--pieces", type=int, default=4, help="held-out chorales harmonised end to end")
    p.add_argument("--runs", type=Path, default=Path("runs/awrs_efficiency"))
    p.add_argument("--chorales-runs", type=Path, default=Path("runs/chorales_vl"))
    p.add_argument("--cache", type=Path, default=Path("runs/chorales_vl/cache"), help="parsed-corpus cache")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe())
    t0 = time.process_time()
    toys = [cached(args.runs / f"toy_seed{s}.json", lambda s=s: toy(s, args)) for s in args.seeds]
    print(toy_table(toys, args.vocab, args.draws) + "\n", flush=True)
    found = [cached(args.runs / f"chorales_seed{s}.json", lambda s=s: chorales(s, args)) for s in args.seeds]
    missing = [s for s, r in zip(args.seeds, found, strict=True) if r is None]
    if missing:
        print(f"chorales seeds {missing}: no trained model under {args.chorales_runs} yet (skipped)\n")
    done = [r for r in found if r is not None]
    if done:
        print(chorales_table(done, args.context_draws))
    print(f"\nCPU this call: {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
