"""`generate` and the samplers refuse bad numbers, each with one line: a denoiser's NaN or +inf logits
stop the run at the step that read them (every sampler, at the first call and at a later one),
bad settings are refused when a sampler is built, and bad canvases and denoiser outputs when
`generate` starts or reads them.

Every run here has `max_steps=MAX_STEPS`, so a sampler that spins on bad numbers fails in a fraction
of a second, and a counted denoiser shows that the run stopped at the call that went wrong."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unmask.sampling import (
    AmusedSampler,
    AncestralSampler,
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
from unmask.sampling.genmol import GenMolSampler
from unmask.sampling.named import NAMES, named_sampler

V, B, N = 5, 2, 12
MAX_STEPS = 60  # every healthy run below takes at most 12 steps
NAN, INF = float("nan"), float("inf")

pytestmark = pytest.mark.usefixtures("one_thread")


def accept_all(row, position, token):
    return True


# each makes at least 3 denoiser calls on the canvas below
SAMPLERS = {
    **{f"named-{name}": named_sampler(name, 4) for name in NAMES},
    "maskgit-greedy": MaskGITSampler(steps=4, temperature=0.0, choice_temperature=0.0),
    "genmol": GenMolSampler(steps=N),
    "amused": AmusedSampler(steps=6),
    "llada": LLaDASampler(steps=12, block_length=4),
    "dream": DreamSampler(steps=8),
    "threshold": ThresholdSampler(0.9, block_length=4),
    "threshold-entropy": ThresholdSampler(0.1, measure="entropy", block_length=None),
    "rcr": RCRSampler(steps=8, block_length=4),
    "magnet": MagnetSampler(3, 4, steps=(2, 3, 2), span_len=2),
    "recap": ReCAPSampler(steps=6, pre_full=2, cache_steps=1, temperature=1.0),
    "enat": ENATSampler(steps=6, temperature=1.0),
    "awrs": ConstrainedSampler(accept_all, steps=4),
}


def canvas():
    """Long[B, N]: row 0 has a given token at place 0, row 1 is all hidden."""
    c = torch.full((B, N), V)
    c[0, 0] = 1
    return c


class CountsSteps:
    """Passes every call on to a sampler and counts its steps (the loop's step index)."""

    def __init__(self, sampler):
        self.inner, self.steps = sampler, 0

    def __getattr__(self, name):  # start, progress, light_queries, revisable: the sampler's own
        return getattr(self.inner, name)

    def step(self, *args, **kwargs):
        self.steps += 1
        return self.inner.step(*args, **kwargs)


class Poisoned:
    """Low-confidence logits (so every sampler takes several calls); call number `at` (from 0) puts
    `value` into one token's logit at the last hidden place of row 1, or everywhere with `everywhere`.
    Records the loop's step and the place at that call."""

    def __init__(self, at: int, value: float, clock: CountsSteps, everywhere: bool = False):
        self.at, self.value, self.clock, self.everywhere = at, value, clock, everywhere
        self.base = 0.3 * torch.randn(N, V, generator=torch.Generator().manual_seed(0))
        self.calls, self.step, self.place = 0, None, None

    def __call__(self, tokens, **condition):
        logits = self.base.expand(*tokens.shape, V).clone()
        if self.calls == self.at:
            self.step = self.clock.steps
            self.place = int((tokens[1] == V).nonzero()[-1])
            if self.everywhere:
                logits.fill_(self.value)
            else:
                logits[1, self.place, 2] = self.value
        self.calls += 1
        return logits


def run(denoiser, sampler, c=None, **kw):
    return generate(denoiser, canvas() if c is None else c, sampler, mask_id=V,
                    generator=torch.Generator().manual_seed(1), max_steps=MAX_STEPS, **kw)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_makes_several_calls_on_healthy_logits(name):
    """The premise of the tests below: call 2 exists for every sampler."""
    clock = CountsSteps(SAMPLERS[name])
    model = Poisoned(at=-1, value=0.0, clock=clock)
    out = run(model, clock)
    assert model.calls >= 3 and not (out.tokens == V).any()


@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "+inf"])
@pytest.mark.parametrize("at", [0, 2])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_non_finite_logits_stop_the_run_at_the_step_that_read_them(name, at, value):
    clock = CountsSteps(SAMPLERS[name])
    model = Poisoned(at, value, clock)
    with pytest.raises(ValueError, match="the denoiser returned non-finite logits at step") as caught:
        run(model, clock)
    message = str(caught.value)
    assert "\n" not in message
    assert model.calls == at + 1  # stopped at once: no further call, no spin to max_steps
    assert re.search(rf"at step {model.step} \(row 1, position {model.place}\)", message), message


@pytest.mark.parametrize("name", ["named-maskgit", "maskgit-greedy", "rcr", "llada", "amused"])
def test_logits_that_are_nan_everywhere_name_the_first_places(name):
    clock = CountsSteps(SAMPLERS[name])
    with pytest.raises(ValueError, match=r"at step 0 \(row 0, positions 0, 1, 2, 3, \.\.\.; 1 more row\)"):
        run(Poisoned(0, NAN, clock, everywhere=True), clock)


class Fixed:
    """Returns the same logits [N, V] at every call, for every row."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, tokens, **condition):
        return self.logits.expand(tokens.shape[0], -1, -1).clone()


@pytest.mark.parametrize("sampler", [MaskGITSampler(steps=4), LLaDASampler(steps=12), AncestralSampler(steps=4)],
                         ids=["maskgit", "llada", "ancestral"])
def test_a_hidden_place_with_every_token_ruled_out_is_refused(sampler):
    logits = torch.zeros(N, V)
    logits[7] = -INF
    with pytest.raises(ValueError, match=r"non-finite logits at step 0 \(row 0, position 7; 1 more row\)"):
        run(Fixed(logits), sampler)


def test_nan_at_a_given_place_is_refused_before_a_sampler_that_reads_it_fails():
    """aMUSEd draws at every place, given ones too; NaN there is the loop's error, not multinomial's."""
    def given_place_nan(tokens):
        logits = torch.zeros(*tokens.shape, V)
        logits[0, 0, 1] = NAN  # place 0 is given in row 0
        return logits

    with pytest.raises(ValueError, match=r"non-finite logits at step 0 \(row 0, position 0\): "):
        run(Returns(given_place_nan), AmusedSampler(steps=4))


def test_ruled_out_tokens_and_ruled_out_given_places_are_allowed():
    """-inf is how a model rules a token out: allowed, as long as a hidden place keeps a token."""
    logits = torch.zeros(N, V)
    logits[:, 3:] = -INF
    logits[0] = -INF  # place 0 is given in row 0 but hidden in row 1: keep one token for row 1
    logits[0, 1] = 0.0
    out = run(Fixed(logits), MaskGITSampler(steps=4))
    assert not (out.tokens == V).any() and (out.tokens[:, 1:] < 3).all()


# --- settings --------------------------------------------------------------------------------------
COUNT = [0, -1, 2.5, True, NAN, "4", None]  # a count >= 1
TEMPERATURE = [-0.5, NAN, INF, True, "1", None]  # a finite number >= 0
POSITIVE = [0, -1.0, NAN, INF, True]  # a finite number > 0
PROBABILITY = [0, -0.1, 1.5, NAN, True]  # in (0, 1]
BLOCK = [0, 2.5, True, NAN]  # a length >= 1, or None

# (class, the settings it is built with, {field: bad values})
SETTINGS = [
    (MaskGITSampler, {}, {"steps": COUNT, "temperature": TEMPERATURE, "choice_temperature": TEMPERATURE,
                          "order": ["greedy", None], "schedule": [None, 3]}),
    (GenMolSampler, {}, {"steps": COUNT, "temperature": TEMPERATURE}),
    (AncestralSampler, {}, {"steps": COUNT, "temperature": TEMPERATURE}),
    (FirstHittingSampler, {}, {"temperature": TEMPERATURE}),
    (AmusedSampler, {}, {"steps": COUNT, "schedule": ["cos", None],
                         "choice_temperature": [NAN, -1.0, (1.0, NAN), (2.0, -1.0), (1, 2, 3), "2", INF],
                         "starting_mask_ratio": [NAN, 1.5, -0.1, True], "draw": ["multinomial", None]}),
    (LLaDASampler, {}, {"steps": COUNT, "block_length": BLOCK, "remasking": ["low", None],
                        "temperature": TEMPERATURE}),
    (DreamSampler, {}, {"steps": COUNT, "alg": ["origin"], "alg_temp": TEMPERATURE, "temperature": TEMPERATURE,
                        "top_p": PROBABILITY, "eps": [0, 1, NAN, -0.5]}),
    (ThresholdSampler, {}, {"threshold": PROBABILITY, "measure": ["margin"], "block_length": BLOCK,
                            "temperature": TEMPERATURE}),
    (ThresholdSampler, {"measure": "entropy"}, {"threshold": [-1.0, NAN, INF, True]}),
    (RCRSampler, {}, {"steps": COUNT, "block_length": BLOCK, "temperature": TEMPERATURE,
                      "confidence": ["probabilities"], "schedule": [None]}),
    (MagnetSampler, {"streams": 3, "length": 4, "steps": (2, 3, 2), "span_len": 2},
     {"streams": [0, 2.5, True], "length": [0, 4.0], "steps": [(2, 3), (2, 0, 2), (2, 2.5, 2), 3, (2, True, 2)],
      "span_len": [0, 5, 1.5], "temperature": TEMPERATURE, "anneal_temperature": ["yes", 1],
      "top_p": PROBABILITY, "span_scoring": ["min"], "offset": [-1, 1.5, NAN]}),
    (ReCAPSampler, {"steps": 6, "pre_full": 2}, {"steps": [0, 2.5, True, NAN], "pre_full": [-1, 7, 1.5],
                                                 "cache_steps": [-1, 0.5, NAN], "choice_temperature": TEMPERATURE,
                                                 "temperature": POSITIVE}),
    (ENATSampler, {}, {"steps": COUNT, "temperature": TEMPERATURE, "choice_temperature": TEMPERATURE,
                       "reuse": ["no", 0], "refresh_every": [-1, 1.5, NAN]}),
    (ConstrainedSampler, {"constraint": accept_all}, {"constraint": [None, 3], "steps": COUNT,
                                                      "temperature": POSITIVE, "order": ["left"]}),
    (GuidanceSchedule, {}, {"scale": [NAN, INF, "3"], "min_scale": [NAN, -INF]}),
]
BAD = [(cls, base, field, value) for cls, base, fields in SETTINGS for field, values in fields.items()
       for value in values]


def _id(case) -> str:
    cls, base, field, value = case
    extra = "-entropy" if base.get("measure") == "entropy" else ""
    return f"{cls.__name__}{extra}-{field}={value!r}"


@pytest.mark.parametrize("case", BAD, ids=[_id(c) for c in BAD])
def test_a_bad_setting_is_refused_when_the_sampler_is_built(case):
    cls, base, field, value = case
    cls(**base)  # the base settings are fine
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: {field} must be .*, got ") as caught:
        cls(**{**base, field: value})
    assert "\n" not in str(caught.value)


# --- canvases and denoiser outputs -----------------------------------------------------------------
@pytest.mark.parametrize("bad, needle", [
    ([[V, V, 1]], "canvas must be a Long tensor [B, N], got a list"),
    (np.full((2, 3), V), "canvas must be a Long tensor [B, N], got a numpy.ndarray"),
    (torch.full((0, 4), V), "canvas must hold at least one row and one position, got shape (0, 4)"),
    (torch.full((2, 0), V), "canvas must hold at least one row and one position, got shape (2, 0)"),
], ids=["list", "numpy", "no-rows", "no-positions"])
def test_a_bad_canvas_is_refused(bad, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        generate(Fixed(torch.zeros(3, V)), bad, MaskGITSampler(steps=2), mask_id=V)


@pytest.mark.parametrize("setting, needle", [
    ({"mask_id": 2.5}, "mask_id must be an integer >= 1"),
    ({"mask_id": True}, "mask_id must be an integer >= 1"),
    ({"mask_id": 0}, "mask_id must be an integer >= 1"),
    ({"max_steps": 0}, "max_steps must be an integer >= 1"),
    ({"max_steps": 2.5}, "max_steps must be an integer >= 1"),
])
def test_bad_loop_settings_are_refused(setting, needle):
    with pytest.raises(ValueError, match=needle):
        generate(Fixed(torch.zeros(3, V)), torch.full((2, 3), V), MaskGITSampler(steps=2),
                 **{"mask_id": V, **setting})


class Returns:
    def __init__(self, make):
        self.make = make

    def __call__(self, tokens, **condition):
        return self.make(tokens)


@pytest.mark.parametrize("make, needle", [
    (lambda t: np.zeros((*t.shape, V), dtype=np.float32),
     "the denoiser's call returned a numpy.ndarray; expected a float tensor [B, N, V] = [2, 3, 5]"),
    (lambda t: None, "the denoiser's call returned None; expected a float tensor [B, N, V] = [2, 3, 5]"),
    (lambda t: torch.zeros(*t.shape, 1, V), "the denoiser's call returned shape (2, 3, 1, 5); expected [B, N, V]"),
    (lambda t: torch.zeros(*t.shape, V, dtype=torch.long), "the denoiser's call returned torch.int64 logits"),
], ids=["numpy", "none", "4-d", "integer"])
def test_a_bad_denoiser_output_is_refused(make, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        generate(Returns(make), torch.full((2, 3), V), MaskGITSampler(steps=2), mask_id=V)


class BadLightReads:
    """A denoiser with full and light reads whose light reads return `light_out`."""

    def __init__(self, light_out):
        self.light_out = light_out

    def __call__(self, tokens):
        return torch.zeros(*tokens.shape, V)

    def full(self, tokens):
        return self(tokens), SimpleNamespace(tokens=tokens.clone())

    def light(self, tokens, queries, cache, width=None):
        return self.light_out, cache


@pytest.mark.parametrize("light_out, needle", [
    (None, "the denoiser's light read returned None; expected a float tensor [M, V] = [M, 5]"),
    (torch.zeros(3), "the denoiser's light read returned shape (3,); expected [M, V] = [M, 5]"),
    (torch.zeros(2, V), "the denoiser's light read returned 2 rows of logits for 12 queried places"),
], ids=["none", "1-d", "too-few"])
def test_a_bad_light_read_is_refused(light_out, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        generate(BadLightReads(light_out), torch.full((2, 6), V), ENATSampler(steps=4), mask_id=V)


def test_nan_in_a_light_read_is_caught():
    model = BadLightReads(None)
    model.light = lambda tokens, queries, cache, width=None: (torch.full((int(queries.sum()), V), NAN), cache)
    with pytest.raises(ValueError, match=r"non-finite logits at step 1 \(row 0, positions"):
        generate(model, torch.full((2, 6), V), ENATSampler(steps=4), mask_id=V, max_steps=MAX_STEPS)


def test_sampler_temperatures_are_checked_in_the_shared_draw_too():
    from unmask.sampling import categorical

    with pytest.raises(ValueError, match="temperature must be >= 0, got nan"):
        categorical(torch.zeros(2, V), math.nan)
