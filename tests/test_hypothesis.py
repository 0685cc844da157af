"""Property tests over random layouts, batches and settings: maskers, samplers, the categorical draw
and the masked-token objective keep their contracts on every input, including empty batches and
one-token sequences."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unmask.layout import Layout, Segment
from unmask.masking import BernoulliMask, BlockMask, RandomMask, SpanMask, TubeMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler, categorical, generate
from unmask.schedules import SCHEDULES, Schedule

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

SHAPES = {
    "seq": st.tuples(st.integers(1, 24)),
    "grid": st.tuples(st.integers(1, 6), st.integers(1, 6)),
    "video": st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    "streams": st.tuples(st.integers(1, 4), st.integers(1, 10)),
}


@st.composite
def layouts(draw, kinds=tuple(SHAPES)):
    n = draw(st.integers(1, 3))
    segments = []
    for i in range(n):
        kind = draw(st.sampled_from(kinds))
        segments.append(Segment(f"s{i}", kind, draw(SHAPES[kind])))
    return Layout(tuple(segments))


@st.composite
def masking_cases(draw):
    """(masker, layout, names it may hide, batch, ratio as given, ratio per row and segment)."""
    layout = draw(layouts())
    kinds = {s.name: s.kind for s in layout.segments}
    options = [RandomMask, BernoulliMask, SpanMask]
    if any(k in ("grid", "streams") for k in kinds.values()):
        options.append(BlockMask)
    if "video" in kinds.values():
        options.append(TubeMask)
    cls = draw(st.sampled_from(options))
    fits = {BlockMask: ("grid", "streams"), TubeMask: ("video",)}.get(cls, tuple(SHAPES))
    names = tuple(n for n, k in kinds.items() if k in fits)
    chosen = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True)))
    chosen = tuple(n for n in names if n in chosen)  # layout order
    if cls is SpanMask:
        masker = SpanMask(chosen, p=draw(st.floats(0.05, 1.0)), max_len=draw(st.integers(1, 12)))
    else:
        masker = cls(chosen)
    batch = draw(st.integers(0, 4))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    form = draw(st.sampled_from(["float", "rows", "rows x segments"]))
    if form == "float":
        given_ratio = draw(unit)
        per = torch.full((batch, len(chosen)), given_ratio, dtype=torch.float64)
    elif form == "rows":
        per_row = torch.tensor(draw(st.lists(unit, min_size=batch, max_size=batch)), dtype=torch.float64)
        given_ratio, per = per_row, per_row.reshape(batch, 1).expand(batch, len(chosen))
    else:
        flat = draw(st.lists(unit, min_size=batch * len(chosen), max_size=batch * len(chosen)))
        given_ratio = per = torch.tensor(flat, dtype=torch.float64).reshape(batch, len(chosen))
    return masker, layout, chosen, batch, given_ratio, per


@SETTINGS
@given(masking_cases(), st.integers(0, 2**32))
def test_maskers_shape_dtype_counts_and_untouched_segments(case, seed):
    masker, layout, chosen, batch, ratio, per = case
    mask = masker(layout, batch, ratio=ratio, generator=torch.Generator().manual_seed(seed))
    assert mask.shape == (batch, layout.n) and mask.dtype == torch.bool
    again = masker(layout, batch, ratio=ratio, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(mask, again)
    for segment in layout.segments:
        part = mask[:, layout.slice(segment.name)]
        if segment.name not in chosen:
            assert not part.any()
            continue
        r = per[:, chosen.index(segment.name)]
        got = part.sum(1)
        if isinstance(masker, BernoulliMask):
            assert not part[r == 0].any() and part[r == 1].all()
        elif isinstance(masker, TubeMask):
            t, h, w = segment.shape
            assert got.tolist() == [t * round(float(x) * h * w) for x in r]
        else:
            assert got.tolist() == [round(float(x) * segment.length) for x in r]


@st.composite
def canvases(draw):
    """(canvas Long[B, N] with mask id V at the places to fill, allowed Bool[N, V], V)."""
    vocab = draw(st.integers(1, 5))
    batch, n = draw(st.integers(1, 3)), draw(st.integers(1, 10))  # an empty canvas is refused
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    allowed = torch.rand(n, vocab, generator=g) < 0.6
    allowed[torch.arange(n), torch.randint(0, vocab, (n,), generator=g)] = True  # never an empty choice
    fixed = torch.multinomial(allowed.float(), 1, generator=g).squeeze(1).expand(batch, n)
    hidden = torch.rand(batch, n, generator=g) < draw(st.floats(0.0, 1.0))
    return fixed.masked_fill(hidden, vocab), allowed, vocab


SAMPLERS = st.one_of(
    st.builds(MaskGITSampler, st.integers(1, 12), st.sampled_from(SCHEDULES).map(Schedule),
              st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 1.0, 4.5]),
              st.sampled_from(["confidence", "random"])),
    st.builds(AncestralSampler, st.integers(1, 12), st.sampled_from([0.0, 1.0, 2.0])),
    st.builds(FirstHittingSampler, st.sampled_from([0.0, 1.0, 2.0])),
)


@SETTINGS
@given(canvases(), SAMPLERS, st.integers(0, 2**32))
def test_samplers_fill_every_place_with_an_allowed_token(case, sampler, seed):
    canvas, allowed, vocab = case
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(allowed.shape, generator=g).masked_fill(~allowed, -math.inf)  # [N, V]

    def denoiser(tokens):
        return table.expand(tokens.shape[0], -1, -1).clone()

    out = generate(denoiser, canvas, sampler, mask_id=vocab, generator=g)
    hidden = canvas == vocab
    assert out.tokens.shape == canvas.shape and out.tokens.dtype == torch.long
    assert not (out.tokens == vocab).any()
    assert torch.equal(out.tokens[~hidden], canvas[~hidden])
    assert allowed[torch.arange(canvas.shape[1]).expand_as(canvas)[hidden], out.tokens[hidden]].all()
    most = int(hidden.sum(1).max()) if canvas.shape[0] else 0
    if most == 0:
        assert out.nfe == 0
    elif isinstance(sampler, FirstHittingSampler):
        assert out.nfe == most  # one token per row per call
    else:
        assert 1 <= out.nfe <= sampler.steps


@SETTINGS
@given(st.integers(0, 4), st.integers(1, 6), st.sampled_from([0.0, 0.3, 1.0, 5.0]), st.integers(0, 2**32))
def test_categorical_never_draws_a_forbidden_token(rows, vocab, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * 10
    banned = torch.rand(rows, vocab, generator=g) < 0.5
    banned[torch.arange(rows), logits.argmax(1)] = False
    logits = logits.masked_fill(banned, -math.inf)
    drawn = categorical(logits, temperature, g)
    assert drawn.shape == (rows,) and drawn.dtype == torch.long
    assert not banned[torch.arange(rows), drawn].any()
    if temperature == 0:
        assert torch.equal(drawn, logits.argmax(1))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(layouts(kinds=("seq", "grid")), st.integers(0, 3), st.integers(1, 5), st.booleans(), st.booleans(),
       st.integers(0, 2**32))
def test_objective_loss_is_a_finite_scalar_on_any_batch(layout, batch, vocab, bernoulli, per_segment, seed):
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(vocab, layout, dim=8, depth=1, heads=2))
    masker = BernoulliMask() if bernoulli else RandomMask()
    objective = MaskedTokenModeling(model, masker, per_segment=per_segment)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, layout.n), generator=g)
    loss, metrics = objective({"tokens": tokens}, generator=g)
    assert loss.shape == () and loss.dtype == torch.float32
    assert math.isfinite(loss.item()) and loss.item() >= 0
    assert 0.0 <= metrics["hidden_share"] <= 1.0 or (batch == 0 and math.isnan(metrics["hidden_share"]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(gr).all() for gr in grads)
    if metrics["hidden_share"] == 0 or batch == 0:  # nothing hidden: nothing to predict, nothing to learn
        assert loss.item() == 0 and all((gr == 0).all() for gr in grads)


@SETTINGS
@given(layouts(kinds=("seq", "grid")), st.integers(1, 4),
       st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1 + 1e-12), st.just(math.nan)))
def test_a_ratio_outside_zero_one_is_refused_by_every_masker(layout, batch, ratio):
    for masker in (RandomMask(), BernoulliMask(), SpanMask()):
        try:
            masker(layout, batch, ratio=ratio, generator=torch.Generator().manual_seed(0))
        except ValueError as e:
            assert "[0, 1]" in str(e)
        else:
            raise AssertionError(f"{type(masker).__name__} took ratio={ratio}")
