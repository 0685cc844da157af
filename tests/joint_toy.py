"""The exact toy for approximate joint sampling (P18): a tiny masked model trained on the 81-sequence
correlated joint of `toys.ExactJoint` (V = 3, N = 4), its sampler layer, and the exact law of every
decoding rule of `sampling/joint.py` on them, by enumerating every decoding path with its probability.

Shared by tests/test_joint_sampling.py and benchmarks/joint_sampling.py."""

from __future__ import annotations

import itertools
import math

import torch

from toys import ExactJoint
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.nn.joint_layer import JointDenoiser, JointLayer
from unmask.objectives.joint_distill import JointDistillation
from unmask.objectives.masked_diffusion import MaskedDiffusion

V, N = 3, 4


def train(objective: torch.nn.Module, sample, steps: int, lr: float, seed: int) -> None:
    """Adam on the objective's trainable parameters; `sample(generator)` gives each step's batch."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = objective(sample(g), generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def toy_model(seed: int = 0, steps: int = 400, batch: int = 256) -> MaskedTokenModel:
    """A masked model trained with the masked diffusion bound on draws from `ExactJoint()`, then frozen."""
    joint = ExactJoint(V, N)
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=32, depth=2, heads=2))

    def sample(g):
        return {"tokens": joint.seqs[torch.multinomial(joint.p, batch, replacement=True, generator=g)]}

    train(MaskedDiffusion(model), sample, steps, 3e-3, seed)
    return model.eval().requires_grad_(False)


def toy_layer(model: MaskedTokenModel, k: int = 4, seed: int = 0, steps: int = 300, batch: int = 256,
              lr: float = 3e-3) -> JointLayer:
    """A `JointLayer` for `model`, trained by `JointDistillation` with up to k tokens per full read."""
    joint = ExactJoint(V, N)
    torch.manual_seed(seed)
    layer = JointLayer(model)

    def sample(g):
        return {"tokens": joint.seqs[torch.multinomial(joint.p, batch, replacement=True, generator=g)]}

    train(JointDistillation(model, layer, k), sample, steps, lr, seed + 1)
    return layer.eval()


# --- exact laws --------------------------------------------------------------------------------


def commit_law(logits: torch.Tensor, tokens: tuple, count: int) -> dict:
    """The exact law of `commit_most_confident` at temperature 1, confidence "probability", for one row.

    logits: Float[N, V]; tokens: the row (V at hidden places). Every joint proposal is enumerated with
    its probability, and every shuffle of the hidden places for the random order among equal scores.
    Returns {new tokens (tuple): probability}."""
    logp = logits.double().log_softmax(-1).tolist()
    hidden = [i for i, t in enumerate(tokens) if t == V]
    law: dict[tuple, float] = {}
    shuffles = list(itertools.permutations(range(len(hidden))))
    for values in itertools.product(range(V), repeat=len(hidden)):
        p = math.exp(sum(logp[i][v] for i, v in zip(hidden, values, strict=True)))
        if p == 0:
            continue
        sure = [math.exp(logp[i][v]) for i, v in zip(hidden, values, strict=True)]
        ties = len(set(sure)) < len(sure)
        for shuffle in shuffles if ties else shuffles[:1]:
            ranked = sorted(shuffle, key=lambda j: -sure[j])  # stable: equal scores keep the shuffle's order
            new = list(tokens)
            for j in ranked[:count]:
                new[hidden[j]] = values[j]
            key = tuple(new)
            law[key] = law.get(key, 0.0) + p / (len(shuffles) if ties else 1)
    return law


def exact_law(model: MaskedTokenModel, k: int, mode: str = "joint", layer: JointLayer | None = None) -> torch.Tensor:
    """Float64[V^N], row-major over `ExactJoint().seqs`: the law of `generate` with
    `JointSampler(tokens_per_call=k, mode=mode)` from an all-hidden canvas, for the denoiser
    `JointDenoiser(model, layer)` (None: the plain model, read fully at every step)."""
    den = JointDenoiser(model, layer) if layer is not None else None
    memo: dict = {}

    def read(base: tuple, tokens: tuple) -> torch.Tensor:
        key = (base, tokens)
        if key not in memo:
            with torch.no_grad():
                if den is None or base == tokens:
                    memo[key] = model(torch.tensor([tokens]))[0]
                else:
                    _, cache = den.full(torch.tensor([base]))
                    now = torch.tensor([tokens])
                    memo[key] = layer(cache.features, now, now != cache.tokens)[0]
        return memo[key]

    out = torch.zeros(V**N, dtype=torch.float64)
    powers = [V ** (N - 1 - i) for i in range(N)]

    def walk(tokens: tuple, base: tuple, step: int, prob: float) -> None:
        if V not in tokens:
            out[sum(t * w for t, w in zip(tokens, powers, strict=True))] += prob
            return
        full = mode == "independent" or step % k == 0 or den is None
        base = tokens if full else base
        count = k if mode == "independent" else 1
        for new, p in commit_law(read(base, tokens), tokens, count).items():
            walk(new, base, step + 1, prob * p)

    walk((V,) * N, (V,) * N, 0, 1.0)
    return out


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()
