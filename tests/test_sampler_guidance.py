"""Classifier-free guidance as a denoiser wrapper and MAGNeT's span decoding over streams, with its
decreasing guidance (Ho & Salimans 2022, arXiv:2207.12598; MAGNeT: Ziv et al. 2024, arXiv:2401.04577)."""

import math

import pytest
import torch

from toys import Factorised, Recorder, uniform_denoiser
from unmask.layout import Layout
from unmask.sampling import (
    ClassifierFreeGuidance,
    GuidanceSchedule,
    MagnetSampler,
    MaskGITSampler,
    generate,
    guidance_scale,
)
from unmask.sampling.guidance import guide

pytestmark = pytest.mark.usefixtures("one_thread")


class PromptSensitive:
    """Logits depend on whether position 0 (the prompt / label) is visible."""

    def __init__(self, v=5, n=8):
        g = torch.Generator().manual_seed(0)
        self.cond, self.uncond = torch.randn(n, v, generator=g), torch.randn(n, v, generator=g)
        self.v = v

    def __call__(self, tokens, **condition):
        seen = (tokens[:, :1] != self.v).unsqueeze(-1)
        return torch.where(seen, self.cond, self.uncond)


# --- conventions and schedules ---------------------------------------------------------------------


def test_every_published_convention_maps_to_one_scale():
    g = torch.Generator().manual_seed(0)
    lc, lu = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    t, w = 2.0, 1.5

    def ours(v, convention):
        return guide(lc, lu, torch.full((3,), guidance_scale(v, convention)))

    assert torch.allclose(ours(3.0, "s"), lu + 3.0 * (lc - lu), atol=1e-5)  # lucidrains, aMUSEd, MAGNeT
    assert torch.allclose(ours(t, "1+t"), (1 + t) * lc - t * lu, atol=1e-5)  # MUSE
    assert torch.allclose(ours(w, "w+1"), lu + (w + 1) * (lc - lu), atol=1e-5)  # LLaDA
    assert torch.allclose(ours(w, "c+w"), lc + w * (lc - lu), atol=1e-5)  # ENAT, Halton, ReCAP
    with pytest.raises(ValueError, match="convention"):
        guidance_scale(1.0, "cfg")


def test_schedules_give_the_documented_coefficients():
    r = torch.linspace(0, 1, 7, dtype=torch.float64)
    assert torch.equal(GuidanceSchedule("constant", 4.0)(r), torch.full_like(r, 4.0))
    assert torch.allclose(GuidanceSchedule("increasing", 4.0)(r), 1 + 3.0 * r)
    m = torch.cos(r * math.pi / 2)
    assert torch.allclose(GuidanceSchedule("decreasing", 10.0, 1.0)(r), m * 10 + (1 - m) * 1)
    with pytest.raises(ValueError, match="guidance schedule"):
        GuidanceSchedule("cosine")


def test_scale_one_is_unguided_and_costs_no_second_pass():
    hide = torch.zeros(8, dtype=torch.bool)
    hide[0] = True
    canvas = torch.full((4, 8), 5)
    canvas[:, 0] = 2
    plain = generate(PromptSensitive(), canvas, MaskGITSampler(4), mask_id=5,
                     generator=torch.Generator().manual_seed(0))
    rec = Recorder(PromptSensitive())
    cfg = ClassifierFreeGuidance(rec, GuidanceSchedule("constant", 1.0), hide=hide, mask_id=5)
    guided = generate(cfg, canvas, MaskGITSampler(4), mask_id=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.tokens, guided.tokens)
    assert all(x.shape[0] == 4 for x in rec.inputs)


def test_guided_logits_and_the_unconditional_branch():
    hide = torch.zeros(8, dtype=torch.bool)
    hide[0] = True
    model = PromptSensitive()
    rec = Recorder(model)
    cfg = ClassifierFreeGuidance(rec, GuidanceSchedule("constant", 3.0), hide=hide, mask_id=5)
    tokens = torch.full((2, 8), 5)
    tokens[:, 0] = 1
    out = cfg(tokens)
    assert torch.allclose(out, model.uncond + 3.0 * (model.cond - model.uncond), atol=1e-5)
    both = rec.inputs[0]
    assert both.shape[0] == 4 and (both[2:, 0] == 5).all() and (both[:2, 0] == 1).all()  # one doubled call


def test_negative_prompt_replaces_the_unconditional_branch():
    seen = []

    def denoiser(tokens, label):
        seen.append(label)
        return torch.zeros(*tokens.shape, 3) + label.view(-1, 1, 1).float()

    cfg = ClassifierFreeGuidance(denoiser, GuidanceSchedule("constant", 2.0), negative={"label": torch.tensor([7])})
    out = cfg(torch.full((1, 4), 3), label=torch.tensor([1]))
    assert [int(x) for x in seen] == [1, 7]
    assert torch.allclose(out, torch.full_like(out, 7 + 2.0 * (1 - 7)))


def test_ruled_out_tokens_stay_out_and_nothing_is_nan():
    lc = torch.tensor([[[0.0, float("-inf"), 1.0]]])
    lu = torch.tensor([[[float("-inf"), 0.5, 1.0]]])
    out = guide(lc, lu, torch.tensor([4.0]))
    assert not torch.isnan(out).any() and out[0, 0, 1] == float("-inf") and out[0, 0, 0] == 0.0


def test_progress_reaches_a_scheduled_guidance_at_every_step():
    scales = []

    class Spy:
        def __call__(self, tokens):
            return torch.zeros(*tokens.shape, 5)

    hide = torch.zeros(12, dtype=torch.bool)
    hide[0] = True
    cfg = ClassifierFreeGuidance(Spy(), GuidanceSchedule("increasing", 5.0), hide=hide, mask_id=5)
    inner_call = ClassifierFreeGuidance.__call__

    def spy_call(self, tokens, progress=None, **condition):
        scales.append(self.schedule(progress).tolist())
        return inner_call(self, tokens, progress, **condition)

    ClassifierFreeGuidance.__call__ = spy_call
    try:
        out = generate(cfg, torch.full((2, 12), 5), MaskGITSampler(6), mask_id=5,
                       generator=torch.Generator().manual_seed(0))
    finally:
        ClassifierFreeGuidance.__call__ = inner_call
    assert out.nfe == 6
    assert [s[0] for s in scales] == pytest.approx([1 + 4.0 * j / 6 for j in range(6)])


# --- MAGNeT ----------------------------------------------------------------------------------------


def magnet_run(sampler, canvas, model, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = model(canvas).shape[-1]
    tokens, state, seen = canvas, sampler.start(canvas == v), []
    while (tokens == v).any():
        seen.append((tokens, state))
        tokens, state = sampler.step(model(tokens), tokens, state, g)
    return seen, tokens


def test_magnet_hides_whole_spans_in_the_scheduled_number_stream_by_stream():
    streams, length, span = 3, 10, 3  # spans 0-2, 3-5, 6-8, and a short last span 9
    steps = (5, 3, 4)
    sampler = MagnetSampler(streams, length, steps, span_len=span, temperature=1.0)
    canvas = torch.full((4, 30), 7)
    seen, out = magnet_run(sampler, canvas, Factorised(torch.randn(30, 7)))
    assert len(seen) == sum(steps) and not (out == 7).any()
    for tokens, state in seen:
        k, j = state.stage, state.step
        for s in range(streams):
            part = tokens[:, s * length : (s + 1) * length] == 7
            if s < k:
                assert not part.any()  # earlier streams are done
            elif s > k:
                assert part.all()  # later streams wait for their stage
            else:
                padded = torch.zeros(4, 12, dtype=torch.bool)
                padded[:, :length] = part
                spans = padded.view(4, 4, span)
                assert (spans.any(-1) == spans[..., 0]).all()  # whole, aligned spans (last one short)
                tau = j / (steps[k] - 1)
                want = max(int(math.cos(math.pi * tau / 2) * 4), 1)
                assert (spans.any(-1).sum(1) == want).all()


def test_magnet_never_touches_the_prompt_and_reads_its_progress():
    layout = Layout.seq(2, "prompt") + Layout.streams(2, 6, "codes")
    sampler = MagnetSampler.for_layout(layout, "codes", (4, 2), span_len=2, temperature=1.0)
    canvas = torch.full((2, 14), 5)
    canvas[:, :2] = 1
    canvas[:, 2:4] = 3  # a given prefix of the first stream
    seen, out = magnet_run(sampler, canvas, uniform_denoiser(5))
    assert all((t[:, :4] == canvas[:, :4]).all() for t, _ in seen) and (out[:, :4] == canvas[:, :4]).all()
    taus = [sampler.progress(state) for _, state in seen]
    assert taus == pytest.approx([0, 1 / 3, 2 / 3, 1, 0, 1])
    coef = GuidanceSchedule("decreasing", 10.0, 1.0)(torch.tensor(taus))
    mask_p = torch.cos(torch.tensor(taus, dtype=torch.float64) * math.pi / 2)
    assert torch.allclose(coef, mask_p * 10 + (1 - mask_p))  # audiocraft's annealed coefficient
    with pytest.raises(ValueError, match="outside"):
        sampler.start(torch.ones(1, 14, dtype=torch.bool))


def test_magnet_rehides_the_least_probable_spans():
    # place probabilities: span 0 is certain, span 1 a coin flip, span 2 nearly certain
    p = torch.tensor([[1.0, 0.0]] * 2 + [[0.5, 0.5]] * 2 + [[0.9, 0.1]] * 2)
    sampler = MagnetSampler(1, 6, (3,), span_len=2, temperature=1.0, anneal_temperature=False, top_p=1.0)
    seen, _ = magnet_run(sampler, torch.full((1, 6), 2), Factorised(p.log()))
    # step 1 (tau = 1/2): max(int(cos(pi / 4) * 3), 1) = 2 spans hidden; span 0 (max p = 1) stays
    after = seen[1][0][0] == 2
    assert after.tolist() == [False, False, True, True, True, True]
