"""Our MaskGIT sampler against peers on one shared denoiser, timed in one process, interleaved.

One tiny bidirectional Transformer (x-transformers `TransformerWrapper`, 4 layers, width 256, 256
tokens, vocabulary 1024 + the mask id, batch 16, 12 steps) is driven three ways:
- ours: `generate(denoiser, canvas, MaskGITSampler(12))`;
- diffusers: a loop over `AmusedScheduler.step` (the aMUSEd / MUSE scheduler);
- x-transformers: `NonAutoregressiveWrapper.generate` (its own MaskGIT loop).
The denoiser's own time inside our run is measured by a timer around the network call, so our
overhead (total minus denoiser) is reported as a share of the denoiser time. A second part compares
first-hitting sampling with 1000-step ancestral sampling on the same network: calls and wall time.
A third part (`--every-sampler`) runs every sampler, the cached block samplers included, on one
`MaskedTokenModel` of the same size (full and light reads, `CachedDenoiser`) and reports each one's
time outside the denoiser as a share of the denoiser's. A fourth (`--dream-reference`) times one
Dream step's draw, ours against Dream's own published procedure, on the same logits.

    .venv/bin/python benchmarks/samplers_vs_peers.py            # about 6 minutes on one CPU core
    .venv/bin/python benchmarks/samplers_vs_peers.py --repeats 7 --threads 2
    .venv/bin/python benchmarks/samplers_vs_peers.py --skip-peers --skip-fhs --every-sampler --only dream,dual
    .venv/bin/python benchmarks/samplers_vs_peers.py --skip-peers --skip-fhs --dream-reference
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe

from unmask.sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler, generate

V, N, B, STEPS = 1024, 256, 16, 12


def build_net(seed: int = 0):
    from x_transformers import Encoder, TransformerWrapper

    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V + 1, max_seq_len=N, attn_layers=Encoder(dim=256, depth=4, heads=4)).eval()


class Timed:
    """Our denoiser: the shared network, logits over the V data ids, with its time accumulated."""

    def __init__(self, net):
        self.net, self.seconds, self.calls = net, 0.0, 0

    def __call__(self, tokens):
        t = time.perf_counter()
        logits = self.net(tokens)[..., :V]
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return logits


def run_ours(net, seed):
    den = Timed(net)
    t = time.perf_counter()
    out = generate(den, torch.full((B, N), V), MaskGITSampler(STEPS), mask_id=V,
                   generator=torch.Generator().manual_seed(seed))
    total = time.perf_counter() - t
    assert not (out.tokens == V).any() and out.nfe == STEPS
    return total, den.seconds


def run_diffusers(net, seed):
    from diffusers import AmusedScheduler

    sched = AmusedScheduler(mask_token_id=V)
    sched.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    x = torch.full((B, N), V)
    for step in sched.timesteps:
        x = sched.step(net(x)[..., :V], step, x, generator=g).prev_sample
    total = time.perf_counter() - t
    assert not (x == V).any()
    return total


def run_x_transformers(wrapper, seed):
    torch.manual_seed(seed)
    t = time.perf_counter()
    wrapper.generate(batch_size=B)
    return time.perf_counter() - t


@torch.no_grad()
def peers(repeats: int) -> dict:
    from x_transformers import NonAutoregressiveWrapper

    net = build_net()
    wrapper = NonAutoregressiveWrapper(net, mask_id=V, steps=STEPS, schedule="cosine").eval()
    times = {"ours": [], "denoiser (in ours)": [], "diffusers AmusedScheduler": [], "x-transformers NAR": []}
    run_ours(net, 0)  # warm-up: first calls allocate
    for r in range(repeats):
        total, den = run_ours(net, r)
        times["ours"].append(total)
        times["denoiser (in ours)"].append(den)
        times["diffusers AmusedScheduler"].append(run_diffusers(net, r))
        times["x-transformers NAR"].append(run_x_transformers(wrapper, r))
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


@torch.no_grad()
def first_hitting_vs_ancestral(batch: int) -> dict:
    """Both samplers fill all N places of `batch` rows once. Ancestral sampling reuses the last logits
    after a step that revealed nothing in any row (MDLM's cache), so its calls are the steps at which
    some row changed; without the cache it would make all 1000."""
    net = build_net()
    res = {}
    for name, sampler in [("first-hitting", FirstHittingSampler()), ("ancestral-1000", AncestralSampler(1000))]:
        den = Timed(net)
        t = time.perf_counter()
        out = generate(den, torch.full((batch, N), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
        res[name] = ((time.perf_counter() - t) * 1000, out.nfe, den.seconds * 1000)
    return res


PEAKED = 8  # a logit scale at which the nucleus is a few tokens, as a trained model's is; see nucleus_sizes


class Scaled(torch.nn.Module):
    """The model with its logits multiplied by `scale`: the untrained model's are near uniform, so
    top-p keeps about half of V at every place, which no trained model does."""

    def __init__(self, model, scale: float):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs) * self.scale


@torch.no_grad()
def nucleus_sizes(model, batch: int, scale: float, temperature: float = 0.2, top_p: float = 0.95) -> float:
    """Median size of Dream's nucleus (its default temperature and top-p) on the all-hidden canvas."""
    from unmask.sampling import nucleus

    logits = model(torch.full((batch, N), V)) * scale
    return torch.isfinite(nucleus(logits.double() / temperature, top_p)).sum(-1).double().median().item()


class TimedCached:
    """A CachedDenoiser whose full and light reads are timed."""

    def __init__(self, model):
        from unmask.sampling import CachedDenoiser

        self.inner, self.seconds = CachedDenoiser(model), 0.0

    def _timed(self, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        return out

    def __call__(self, tokens):
        return self._timed(self.inner, tokens)

    def full(self, tokens):
        return self._timed(self.inner.full, tokens)

    def light(self, tokens, queries, cache, width=None):
        return self._timed(self.inner.light, tokens, queries, cache, width)


@torch.no_grad()
def every_sampler(batch: int, repeats: int, only: str = "") -> dict:
    """{sampler: (median ms in total, median ms in the denoiser, full reads, light reads)}."""
    from unmask.layout import Layout
    from unmask.nn import MaskedTokenModel, ModelConfig
    from unmask.sampling import (
        AmusedSampler,
        BlockCached,
        DreamSampler,
        ENATSampler,
        LLaDASampler,
        RCRSampler,
        ReCAPSampler,
        ThresholdSampler,
    )
    from unmask.schedules import Schedule

    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=256, depth=4, heads=4)).eval()
    threshold = ThresholdSampler(0.9, block_length=32)
    samplers = {
        "MaskGIT 12": MaskGITSampler(STEPS, Schedule("cosine")),
        "aMUSEd 12": AmusedSampler(STEPS),
        "aMUSEd 12, diffusers' draws": AmusedSampler(STEPS, draw="diffusers"),
        "ancestral 12": AncestralSampler(STEPS),
        "LLaDA 64, blocks of 32": LLaDASampler(64, block_length=32),
        "Dream 12": DreamSampler(STEPS),
        f"Dream 12, logits x{PEAKED}": DreamSampler(STEPS),
        "RCR 64, blocks of 32": RCRSampler(64, block_length=32),
        "threshold 0.9, blocks of 32": threshold,
        "threshold, prefix cache": BlockCached(threshold, "prefix"),
        "threshold, dual cache": BlockCached(threshold, "dual"),
        "ReCAP 12": ReCAPSampler(STEPS, pre_full=4),
        "ENAT 12": ENATSampler(STEPS),
    }
    wanted = [w.strip().lower() for w in only.split(",")]
    samplers = {name: s for name, s in samplers.items() if any(w in name.lower() for w in wanted)}
    canvas = torch.full((batch, N), V)
    model(canvas)  # warm-up
    print(f"  Dream's nucleus (T 0.2, top-p 0.95), median size of {V}: {nucleus_sizes(model, batch, 1):.0f} tokens "
          f"untrained, {nucleus_sizes(model, batch, PEAKED):.0f} with logits x{PEAKED}")
    res = {}
    for name, sampler in samplers.items():
        totals, inside = [], []
        for r in range(repeats):
            den = TimedCached(Scaled(model, PEAKED) if "logits x" in name else model)
            t = time.perf_counter()
            out = generate(den, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(r))
            totals.append(time.perf_counter() - t)
            inside.append(den.seconds)
        res[name] = (statistics.median(totals) * 1000, statistics.median(inside) * 1000, out.nfe, out.light)
    return res


def dream_reference_draw(logits: torch.Tensor, temperature: float, top_p: float, generator) -> tuple:
    """Dream's published `sample_tokens` with top-p and the entropy score, as its procedure reads (one
    sort of all V per place, the cumulative softmax, the mask scattered back, a softmax of the kept
    logits, one categorical draw per place, the entropy of the kept distribution). logits: [M, V]."""
    logits = logits / temperature
    values, order = logits.sort(dim=-1, descending=True)
    remove = values.softmax(-1).cumsum(-1) > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    logits = logits.masked_fill(torch.zeros_like(remove).scatter_(-1, order, remove), torch.finfo(logits.dtype).min)
    probs = logits.softmax(-1)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    return tokens, -entropy


@torch.no_grad()
def dream_draw_vs_reference(batch: int, repeats: int) -> dict:
    """One Dream step's draw at every place of the all-hidden canvas (T 0.2, top-p 0.95, entropy score),
    ours (`nucleus_draw`, reading every place, and with the step's count of places to keep) against
    Dream's procedure, on the untrained model's logits and on them x8: {case: (ours all, ours best, Dream) ms}."""
    from unmask.layout import Layout
    from unmask.nn import MaskedTokenModel, ModelConfig
    from unmask.sampling import DreamSampler, nucleus_draw

    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=256, depth=4, heads=4)).eval()
    base = model(torch.full((batch, N), V))
    hidden = torch.ones(batch, N, dtype=torch.bool)
    count = torch.full((batch,), int(N * DreamSampler(STEPS).share(0)))
    res = {}
    for name, scale in (("untrained logits", 1.0), (f"logits x{PEAKED}", PEAKED)):
        logits = base * scale
        runs = {"ours, every place": lambda g, x=logits: nucleus_draw(x, 0.95, 0.2, g, "entropy", hidden),
                "ours, the step's count": lambda g, x=logits: nucleus_draw(x, 0.95, 0.2, g, "entropy", hidden, count),
                "Dream's procedure": lambda g, x=logits: dream_reference_draw(x.reshape(-1, V), 0.2, 0.95, g)}
        times = {k: [] for k in runs}
        for r in range(repeats + 1):
            for k, fn in runs.items():
                t = time.perf_counter()
                fn(torch.Generator().manual_seed(r))
                if r:  # the first round warms up
                    times[k].append(time.perf_counter() - t)
        res[name] = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-fhs", action="store_true", help="skip first-hitting vs ancestral (slowest part)")
    ap.add_argument("--fhs-batch", type=int, default=4, help="rows for first-hitting vs ancestral")
    ap.add_argument("--every-sampler", action="store_true", help="also time every sampler's overhead")
    ap.add_argument("--every-batch", type=int, default=4, help="rows for --every-sampler")
    ap.add_argument("--only", default="",
                    help="with --every-sampler: only the samplers whose name contains one of these (comma-separated)")
    ap.add_argument("--skip-peers", action="store_true", help="skip the MaskGIT comparison with the peers")
    ap.add_argument("--dream-reference", action="store_true",
                    help="time one Dream step's draw, ours against Dream's own procedure (--every-batch rows)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    print(f"shared denoiser: 4 layers, width 256, N={N}, V={V}, batch {B}, {STEPS} steps; "
          f"{args.repeats} interleaved repeats, median; {args.threads} thread(s)")
    if not args.skip_peers:
        ms = peers(args.repeats)
        ours, den = ms["ours"], ms["denoiser (in ours)"]
        for k, v in ms.items():
            print(f"  {k:28s} {v:9.1f} ms")
        print(f"  our overhead beyond the denoiser: {ours - den:.1f} ms = "
              f"{100 * (ours - den) / den:.2f}% of denoiser time")
        print(f"  ours / diffusers loop: {ours / ms['diffusers AmusedScheduler']:.3f}; "
              f"ours / x-transformers: {ours / ms['x-transformers NAR']:.3f}")
    if not args.skip_fhs:
        res = first_hitting_vs_ancestral(args.fhs_batch)
        (fw, fn, fd), (aw, an, ad) = res["first-hitting"], res["ancestral-1000"]
        print(f"first-hitting vs ancestral, same network, {args.fhs_batch} rows x {N} places:")
        print(f"  first-hitting:             {fn:5d} calls, {fw:9.0f} ms ({fw - fd:.0f} ms outside the network)")
        print(f"  ancestral 1000 (cached):   {an:5d} calls, {aw:9.0f} ms ({aw - ad:.0f} ms outside the network)")
        print(f"  ancestral / first-hitting: calls x{an / fn:.2f}, wall time x{aw / fw:.2f}")
    if args.dream_reference:
        print(f"one Dream step's draw over {args.every_batch} x {N} hidden places, V={V}, median of {args.repeats}:")
        for case, ms in dream_draw_vs_reference(args.every_batch, args.repeats).items():
            ratio = ms["Dream's procedure"] / ms["ours, every place"]
            print(f"  {case}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
                  + f"; Dream's / ours (every place) {ratio:.2f}")
    if args.every_sampler:
        print(f"every sampler on one MaskedTokenModel (4 layers, width 256, N={N}, V={V}, batch {args.every_batch}, "
              f"untrained), median of {args.repeats}: time outside the denoiser as a share of the denoiser's")
        for name, (total, inside, full, light) in every_sampler(args.every_batch, args.repeats, args.only).items():
            print(f"  {name:30s} {total:9.1f} ms, denoiser {inside:9.1f} ms, {full:4d} full + {light:4d} light reads, "
                  f"overhead {100 * (total - inside) / inside:5.2f}%")


if __name__ == "__main__":
    main()
