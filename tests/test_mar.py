"""MAR over continuous tokens (Li et al. 2024) and its use on point clouds (MAR-3D, Chen et al. 2025):
the diffusion head's schedule, loss and sampler against their closed forms, the objective's masking
and inputs, the reveal loop's counts, order and immutability, and the discrete-token baseline."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.nn.diffusion_head import DiffusionHead, cosine_alpha_bar, ddpm_sample, spaced_timesteps
from unmask.nn.mae import MAEConfig
from unmask.nn.point_groups import PointGroups
from unmask.nn.point_latents import GroupAutoencoder, PointLatents
from unmask.nn.visible import split_visible
from unmask.objectives.mar import DiscreteMAR, GroupAutoencoding, MaskedAutoregression
from unmask.sampling import generate
from unmask.sampling.mar import MARSampler, generate_continuous
from unmask.sampling.maskgit import MaskGITSampler

N, C = 12, 5


def tiny_config(n: int = N, channels: int = C) -> MAEConfig:
    return MAEConfig(image_size=(n,), channels=channels, patch=1, dim=16, depth=1, heads=2, decoder_dim=8,
                     decoder_depth=1, decoder_heads=2)


def tiny_mar(seed: int = 0, **kw) -> MaskedAutoregression:
    torch.manual_seed(seed)
    return MaskedAutoregression(tiny_config(), head_width=16, head_depth=2, sampling_steps=5, **kw).eval()


def closed_form_alpha_bar(t: torch.Tensor, total: int = 1000) -> torch.Tensor:
    f = lambda s: torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return f((t.double() + 1) / total) / f(torch.zeros((), dtype=torch.float64))


# --- the diffusion head -------------------------------------------------------------------------
def test_alpha_bar_is_the_cosine_closed_form():
    ab = cosine_alpha_bar(1000)
    t = torch.arange(999)
    torch.testing.assert_close(ab[:-1], closed_form_alpha_bar(t), rtol=1e-12, atol=1e-15)
    # the last beta is clipped to 0.999 (the closed form reaches 0 there)
    assert ab[-1] == pytest.approx(float(ab[-2]) * (1 - 0.999), rel=1e-12)
    assert (ab[1:] < ab[:-1]).all() and 0.99995 < ab[0] < 1


def test_spaced_timesteps_span_the_schedule():
    ts = spaced_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and (ts[1:] > ts[:-1]).all()
    assert torch.equal(spaced_timesteps(1000, 1000), torch.arange(1000))
    with pytest.raises(ValueError, match="sampling steps"):
        spaced_timesteps(1000, 0)


def test_head_loss_is_the_epsilon_mse_of_its_formula():
    torch.manual_seed(0)
    head = DiffusionHead(3, 4, width=8, depth=1)
    for p in head.parameters():  # leave MAR's zero init, so the prediction is not identically 0
        torch.nn.init.normal_(p, std=0.3)
    x, z, noise = torch.randn(4, 3), torch.randn(4, 4), torch.randn(4, 3)
    t = torch.tensor([0, 250, 500, 999])
    a = closed_form_alpha_bar(t).unsqueeze(1)
    a[3] = cosine_alpha_bar(1000)[999]  # the clipped last step
    x_t = (a.sqrt() * x.double() + (1 - a).sqrt() * noise.double()).float()
    want = (head.net(x_t, t, z) - noise).pow(2).mean(-1)
    got = head.loss(x, z, t=t, noise=noise)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (4,)


def test_head_loss_draws_come_from_the_generator():
    torch.manual_seed(0)
    head = DiffusionHead(3, 4, width=8, depth=1)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, z = torch.randn(64, 3), torch.randn(64, 4)
    a = head.loss(x, z, generator=torch.Generator().manual_seed(1))
    b = head.loss(x, z, generator=torch.Generator().manual_seed(1))
    c = head.loss(x, z, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddpm_sampler_draws_a_gaussian_with_its_exact_noise_predictor():
    """For data N(mu, s^2) the exact eps predictor is sqrt(1-a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a); the
    sampler must then return that Gaussian (wrong posterior coefficients or variance move mean or std)."""
    mu, s = 1.5, 0.3
    ab = cosine_alpha_bar(1000)

    def eps(x, t):
        a = ab[t].unsqueeze(1).float()
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s * s + 1 - a)

    draws = ddpm_sample(eps, (10000, 1), ab, 100, generator=torch.Generator().manual_seed(0))
    assert draws.mean().item() == pytest.approx(mu, abs=0.01)
    assert draws.std().item() == pytest.approx(s, rel=0.05)
    cold = ddpm_sample(eps, (10000, 1), ab, 100, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert cold.std().item() < 0.8 * s  # temperature scales the noise of every step
    again = ddpm_sample(eps, (10000, 1), ab, 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_ddpm_clip_bounds_the_x0_estimate():
    """An eps predictor off by 0.05 at the noisiest step throws x0 to about 0.05 / sqrt(a) = 1000 there,
    and the next step's input far out (about 33); with clip the x0 estimate stays in [-clip, clip]."""
    ab = cosine_alpha_bar(1000)
    seen = []

    def eps(x, t):
        seen.append(x.abs().max().item())
        return x + 0.05

    out = ddpm_sample(eps, (500, 2), ab, 20, generator=torch.Generator().manual_seed(0))
    wild, seen[:] = seen[1], []
    tame = ddpm_sample(eps, (500, 2), ab, 20, clip=2.0, generator=torch.Generator().manual_seed(0))
    assert wild > 20 and seen[1] < 6 and tame.abs().max() <= 2.0 and out.abs().max() > 2.0


# --- the objective ------------------------------------------------------------------------------
def test_mask_counts_follow_mars_truncated_normal():
    model = tiny_mar()
    counts = set()
    for seed in range(200):
        mask = model.draw_mask(6, torch.Generator().manual_seed(seed))
        per_row = mask.sum(1)
        assert (per_row == per_row[0]).all()  # one count per batch: the encoder drops hidden tokens
        counts.add(int(per_row[0]))
    assert min(counts) >= round(0.7 * N) and max(counts) == N and len(counts) >= 3


def test_condition_never_reads_hidden_tokens():
    model = tiny_mar()
    tokens = torch.randn(3, N, C)
    mask = model.draw_mask(3, torch.Generator().manual_seed(5))
    mask[:, 0] = False  # keep something visible to perturb
    mask = torch.stack([m if m.sum() == mask[0].sum() else mask[0] for m in mask])
    z, index = model.condition(tokens, mask)
    assert z.shape == (3, int(mask[0].sum()), 8) and torch.equal(index.mask, mask)
    changed = tokens.clone()
    changed[mask] = torch.randn(int(mask.sum()), C)
    torch.testing.assert_close(model.condition(changed, mask)[0], z)
    visible = tokens.clone()
    visible[:, 0] += 1.0
    assert not torch.allclose(model.condition(visible, mask)[0], z)


def test_loss_reads_the_hidden_tokens_each_repeated_head_batch_times():
    model = tiny_mar().train()
    seen = {}
    draw, loss = model.draw_mask, model.head.loss
    model.draw_mask = lambda b, g: seen.setdefault("mask", draw(b, g))
    model.head.loss = lambda x, z, generator=None: seen.setdefault("x", x) @ torch.zeros(C) + z.sum() * 0
    tokens = torch.randn(4, N, C)
    model({"tokens": tokens}, torch.Generator().manual_seed(3))
    mask = seen["mask"]
    assert torch.equal(seen["x"], tokens[mask].repeat(4, 1))
    model.head.loss = loss


def test_objective_trains_the_head_and_the_transformer():
    model = tiny_mar().train()
    out = model({"tokens": torch.randn(4, N, C)}, torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and set(out.metrics) == {"loss", "hidden_share"}
    assert all(v.ndim == 0 and not v.requires_grad for v in out.metrics.values())
    out.loss.backward()
    # MAR's zero-initialised head output passes gradient only to itself at first
    assert model.head.net.out.weight.grad.abs().sum() > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="drop-hidden"):
        MaskedAutoregression(MAEConfig(image_size=(N,), channels=C, patch=1, hide="replace"))
    with pytest.raises(ValueError, match="steps"):
        MARSampler(steps=0)
    with pytest.raises(ValueError, match="codebook"):
        DiscreteMAR(tiny_config(), torch.zeros(4, C + 1))


# --- the reveal loop ----------------------------------------------------------------------------
def test_reveal_counts_follow_the_cosine_schedule_and_sum_to_n():
    sampler = MARSampler(steps=8)
    # floor(32 cos(pi/2 (j+1)/8)) for j = 0..6, then 0
    assert sampler.hidden_after(32) == [31, 29, 26, 22, 17, 12, 6, 0]
    assert sampler.reveal_counts(32) == [1, 2, 3, 4, 5, 5, 6, 6]
    assert sampler.reveal_counts(3) == [1, 1, 1]  # fewer tokens than steps: one per step
    maskgit = MaskGITSampler(steps=8)  # the rule is MaskGIT's, shared
    prev, state = torch.tensor([32]), maskgit.start(torch.ones(1, 32, dtype=torch.bool))
    for j, left in enumerate(sampler.hidden_after(32)):
        prev = maskgit.keep_hidden(type(state)(j, [32]), prev)
        assert int(prev[0]) == left


class PlaceModel:
    """z = the place's index; a draw returns z in every channel; checks that the hidden set it is given
    is exactly the set not yet filled."""

    def __init__(self):
        self.filled = None

    def condition(self, tokens, hidden):
        index = split_visible(hidden)
        assert torch.equal(hidden, torch.isnan(tokens[..., 0]))
        return index.ids_hidden.unsqueeze(-1).float(), index

    def sample_tokens(self, z, *, temperature, generator, steps, clip):
        return z.expand(-1, C).clone()


def test_each_place_gets_its_own_condition_and_revealed_tokens_never_change():
    b, steps = 3, 6
    canvas = torch.randn(b, N, C)
    hidden = torch.zeros(b, N, dtype=torch.bool)
    hidden[:, :9] = True
    hidden = hidden[:, torch.randperm(N)]
    canvas[hidden] = float("nan")  # a hidden place that were read would poison the output
    given = canvas.clone()
    trail = []

    def on_step(before, after, revealed):
        # nothing else moves
        torch.testing.assert_close(after[~revealed], before[~revealed], rtol=0, atol=0, equal_nan=True)
        assert torch.isnan(before[revealed]).all()  # only hidden places are revealed
        trail.append(revealed.clone())

    sampler = MARSampler(steps=steps)
    out = generate_continuous(PlaceModel(), canvas, hidden, sampler, generator=torch.Generator().manual_seed(0),
                              on_step=on_step)
    places = torch.arange(N).float().expand(b, N)
    assert torch.equal(out.tokens[hidden][:, 0], places[hidden])  # each place got its own z
    assert torch.equal(out.tokens[~hidden], given[~hidden])  # the canvas's tokens stay
    assert (out.revealed_at[~hidden] == -1).all()
    counts = sampler.reveal_counts(9)
    assert out.steps == len(counts) == len(trail)
    for step, count in enumerate(counts):
        assert ((out.revealed_at == step).sum(1) == count).all()
        assert torch.equal(trail[step], out.revealed_at == step)


def test_generation_is_seeded_and_keeps_revealed_tokens_with_a_real_model():
    model = tiny_mar()
    hidden = torch.ones(4, N, dtype=torch.bool)
    sampler = MARSampler(steps=4)
    history = []
    a = generate_continuous(model, torch.zeros(4, N, C), hidden, sampler, generator=torch.Generator().manual_seed(0),
                            on_step=lambda before, after, rev: history.append(after))
    b = generate_continuous(model, torch.zeros(4, N, C), hidden, sampler, generator=torch.Generator().manual_seed(0))
    c = generate_continuous(model, torch.zeros(4, N, C), hidden, sampler, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.revealed_at, b.revealed_at)
    assert not torch.equal(a.tokens, c.tokens)
    for step, tokens in enumerate(history):  # once revealed, a token is its final value
        done = (a.revealed_at <= step) & (a.revealed_at >= 0)
        assert torch.equal(tokens[done], a.tokens[done])
    with pytest.raises(ValueError, match="same number"):
        uneven = hidden.clone()
        uneven[0, 0] = False
        generate_continuous(model, torch.zeros(4, N, C), uneven, sampler)


# --- the discrete baseline and the point tokens ---------------------------------------------------
def test_discrete_baseline_cross_entropy_and_generation():
    torch.manual_seed(0)
    k = 6
    model = DiscreteMAR(tiny_config(), torch.randn(k, C))
    codes = torch.randint(k, (3, N))
    seen = {}
    draw = model.draw_mask
    model.draw_mask = lambda b, g: seen.setdefault("mask", draw(b, g))
    out = model({"codes": codes}, torch.Generator().manual_seed(0))
    mask = seen["mask"]
    z, _ = model.condition(model.codebook[codes], mask)
    want = torch.nn.functional.cross_entropy(model.head(z).reshape(-1, k), codes[mask])
    torch.testing.assert_close(out.loss, want)
    model.eval()
    canvas = codes.clone()
    canvas[:, :7] = k  # the mask id
    res = generate(model.logits, canvas, MaskGITSampler(steps=4, order="random"), mask_id=k,
                   generator=torch.Generator().manual_seed(0))
    assert ((res.tokens >= 0) & (res.tokens < k)).all() and torch.equal(res.tokens[:, 7:], codes[:, 7:])
    logits = model.logits(canvas)
    assert (logits[:, 7:] == 0).all() and (logits[:, :7] != 0).any()


def test_point_latents_round_trip_and_group_autoencoder_loss():
    torch.manual_seed(0)
    ae = GroupAutoencoder(latent=4, group_size=6, width=4, hidden=8).eval()
    groups = torch.randn(2, 5, 6, 3) * 0.1
    shuffled = groups[:, :, torch.randperm(6)]
    torch.testing.assert_close(ae.encode(shuffled), ae.encode(groups))  # a set of points, no order
    want = ae.reconstruction_error(groups).mean()
    torch.testing.assert_close(GroupAutoencoding(ae)({"groups": groups}).loss, want)
    centres = torch.randn(2, 5, 3)
    latents = PointLatents(ae).fit(PointGroups(groups, centres))
    tokens = latents.encode(PointGroups(groups, centres))  # [2, 5, 3 + 4]
    flat = tokens.reshape(-1, 7)
    torch.testing.assert_close(flat.mean(0), torch.zeros(7), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(0), torch.ones(7), atol=1e-4, rtol=0)
    clouds = latents.decode(tokens)  # [2, 5 * 6, 3]
    by_hand = ae.decode(ae.encode(groups)) + centres.unsqueeze(2)
    torch.testing.assert_close(clouds, by_hand.reshape(2, 30, 3), atol=1e-5, rtol=1e-5)
