"""One contract over every masker: shape, dtype, exact count, determinism, untouched segments.

Three maskers count differently, as their papers do (each documented in its module): MEAP hides
max(1, floor(ratio * L)), entity masking at most one token per entity, running cells round per 2x2 cell."""

import math

import pytest
import torch

from unmask.layout import Layout
from unmask.masking import (
    BernoulliMask,
    BlockMask,
    ColorMask,
    DisjointViewMask,
    EdgeMask,
    EntityMask,
    FrequencyMask,
    HardPatchMask,
    MeapMask,
    MixtureMask,
    NGramMask,
    RandomMask,
    RunningCellMask,
    SelectiveMask,
    SpanMask,
    TrackMask,
    TubeMask,
    TwinMask,
    WholeWordMask,
    hide_top,
)

SEQ = Layout.seq(1, name="label") + Layout.seq(37, name="tokens")
GRID = Layout.seq(1, name="label") + Layout.grid(8, 8, name="pixels")
VIDEO = Layout.seq(2, name="text") + Layout.video(4, 4, 4, name="video")
STREAMS = Layout.streams(4, 16, name="voices")

def words(b, n):
    """word_ids of 1..3-token words, the same cut in every row."""
    sizes = [1 + (i % 3) for i in range(n)]
    ids = torch.repeat_interleave(torch.arange(n), torch.tensor(sizes))[:n]
    return {"word_ids": ids.expand(b, n).clone()}


def entities(b, n):
    """entity_ids: identifiers of 2 tokens, so SEQ's 37 tokens hold 19 entities."""
    return {"entity_ids": ((torch.arange(n) + 1) // 2).expand(b, n).clone()}


def scores(name):
    """Per-token scores of the 64 pixels (data-driven maskers read one segment's values)."""
    return lambda b, n: {name: torch.rand(b, 64, generator=torch.Generator().manual_seed(b))}


def first_view(b, n):
    return {"first": RandomMask()(Layout.grid(8, 8), b, ratio=0.5, generator=torch.Generator().manual_seed(11))}


def all_voices(b, n):
    return {"content": torch.ones(b, 4, dtype=torch.bool)}


# (masker, layout, segment it may hide, expected count for a ratio, context the masker reads)
CASES = [
    (RandomMask(("tokens",)), SEQ, "tokens", lambda r: round(r * 37), None),
    (RandomMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), None),
    (BlockMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), None),
    (BlockMask(), STREAMS, "voices", lambda r: round(r * 64), None),
    (SpanMask(("tokens",)), SEQ, "tokens", lambda r: round(r * 37), None),
    (SpanMask(), STREAMS, "voices", lambda r: round(r * 64), None),
    (TubeMask(("video",)), VIDEO, "video", lambda r: 4 * round(r * 16), None),
    *[(ColorMask(("pixels",), colour=c), GRID, "pixels", lambda r: round(r * 64), None)
      for c in ("red", "blue", "green", "purple")],
    (FrequencyMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), None),
    (MeapMask(("tokens",)), SEQ, "tokens", lambda r: max(1, math.floor(r * 37)) if r > 0 else 0, None),
    (WholeWordMask(("tokens",)), SEQ, "tokens", lambda r: round(r * 37), words),
    (NGramMask(("tokens",)), SEQ, "tokens", lambda r: round(r * 37), words),
    (EntityMask(("tokens",)), SEQ, "tokens", lambda r: min(round(r * 37), 19), entities),  # one per entity
    (HardPatchMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), scores("scores")),
    (SelectiveMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), scores("energy")),
    (DisjointViewMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), first_view),
    (TwinMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), first_view),
    (RunningCellMask(("video",)), VIDEO, "video", lambda r: 4 * 4 * round(4 * r), None),  # rounded per 2x2 cell
    (TrackMask(), STREAMS, "voices", lambda r: round(r * 64), all_voices),
    (MixtureMask(("pixels",), (RandomMask(("pixels",)), BlockMask(("pixels",)))), GRID, "pixels",
     lambda r: round(r * 64), None),
    (EdgeMask(("pixels",)), GRID, "pixels", lambda r: round(r * 64), None),
    (EdgeMask(), STREAMS, "voices", lambda r: round(r * 64), None),
]
IDS = ["random-seq", "random-grid", "block-grid", "block-streams", "span-seq", "span-streams", "tube",
       "color-red", "color-blue", "color-green", "color-purple", "frequency", "meap", "whole-word", "ngram",
       "entity", "hard-patch", "selective", "disjoint", "twin", "running-cell", "tracks", "mixture", "edge-grid",
       "edge-streams"]


@pytest.mark.parametrize("masker,layout,segment,expected,context", CASES, ids=IDS)
class TestMaskerContract:
    @staticmethod
    def draw(masker, layout, context, b, ratio, seed):
        extra = context(b, layout.n) if context else {}
        return masker(layout, b, ratio=ratio, generator=torch.Generator().manual_seed(seed), **extra)

    @pytest.mark.parametrize("ratio", [0.0, 0.15, 0.5, 0.75, 0.9, 1.0])
    def test_shape_dtype_exact_count(self, masker, layout, segment, expected, context, ratio):
        mask = self.draw(masker, layout, context, 16, ratio, 1)
        assert mask.shape == (16, layout.n) and mask.dtype == torch.bool
        assert (mask.sum(1) == expected(ratio)).all()

    def test_untouched_segments(self, masker, layout, segment, expected, context):
        mask = self.draw(masker, layout, context, 32, 0.9, 2)
        outside = torch.ones(layout.n, dtype=torch.bool)
        outside[layout.slice(segment)] = False
        assert not mask[:, outside].any()

    def test_same_generator_same_mask(self, masker, layout, segment, expected, context):
        a = self.draw(masker, layout, context, 8, 0.6, 3)
        b = self.draw(masker, layout, context, 8, 0.6, 3)
        c = self.draw(masker, layout, context, 8, 0.6, 4)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_per_row_ratios(self, masker, layout, segment, expected, context):
        ratios = torch.tensor([0.0, 0.25, 0.5, 1.0])
        mask = self.draw(masker, layout, context, 4, ratios, 5)
        assert mask.sum(1).tolist() == [expected(float(r)) for r in ratios]

    def test_rows_differ(self, masker, layout, segment, expected, context):
        mask = self.draw(masker, layout, context, 8, 0.5, 6)
        if isinstance(masker, MeapMask):  # one set of positions per batch, shared by its rows (its reference script)
            assert (mask == mask[0]).all()
            return
        assert len({tuple(row.tolist()) for row in mask}) > 1

    def test_bad_ratio_is_an_error(self, masker, layout, segment, expected, context):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            self.draw(masker, layout, context, 2, 1.5, 0)
        with pytest.raises(ValueError, match="rows"):
            self.draw(masker, layout, context, 2, torch.tensor([0.1, 0.2, 0.3]), 0)


def test_per_segment_ratios_are_counted_per_segment():
    mask = RandomMask()(GRID, 3, ratio=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]]))
    assert mask[:, 0].tolist() == [True, False, True]
    assert mask[:, 1:].sum(1).tolist() == [0, 64, 32]


def test_random_mask_is_uniform_over_positions():
    mask = RandomMask()(Layout.seq(10), 20000, ratio=0.3, generator=torch.Generator().manual_seed(0))
    freq = mask.double().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.3), atol=0.015)


def test_bernoulli_mask_rate_and_varying_counts():
    mask = BernoulliMask()(Layout.seq(50), 4000, ratio=0.2, generator=torch.Generator().manual_seed(0))
    assert mask.double().mean().item() == pytest.approx(0.2, abs=0.005)
    assert mask.sum(1).unique().numel() > 5


def test_block_mask_forms_blocks():
    """Block masks are spatially clumped: far more hidden neighbours than random masks."""
    g = torch.Generator().manual_seed(0)
    lay = Layout.grid(14, 14)

    def hidden_neighbour_share(mask):
        m = mask.view(-1, 14, 14)
        pairs = (m[:, :, 1:] & m[:, :, :-1]).sum() + (m[:, 1:] & m[:, :-1]).sum()
        return pairs.item() / m.sum().item()

    block = BlockMask(min_area=16)(lay, 64, ratio=0.4, generator=g)
    rand = RandomMask()(lay, 64, ratio=0.4, generator=g)
    assert hidden_neighbour_share(block) > 1.5 * hidden_neighbour_share(rand)


def test_span_mask_makes_runs():
    g = torch.Generator().manual_seed(0)
    mask = SpanMask(p=0.2)(Layout.seq(200), 64, ratio=0.15, generator=g)
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum() + mask[:, 0].sum()
    mean_run = mask.sum().item() / starts.item()
    assert 2.5 < mean_run < 5.0  # SpanBERT: geometric(0.2) clipped at 10 has mean 3.8


def test_tube_mask_is_identical_across_time():
    mask = TubeMask()(Layout.video(4, 4, 4), 16, ratio=0.75, generator=torch.Generator().manual_seed(0))
    frames = mask.view(16, 4, 16)
    assert (frames == frames[:, :1]).all()


def test_maskers_refuse_wrong_segment_kinds():
    with pytest.raises(ValueError, match="video"):
        TubeMask()(Layout.grid(4, 4), 2, ratio=0.5)
    with pytest.raises(ValueError, match="grid"):
        BlockMask()(Layout.seq(16), 2, ratio=0.5)
    with pytest.raises(KeyError, match="pixels"):
        RandomMask(("pixel",))(GRID, 2, ratio=0.5)


def test_hide_top_picks_highest_scores():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    mask = hide_top(scores, torch.tensor([2, 1]))
    assert mask.tolist() == [[False, True, False, True], [True, False, False, False]]


def test_mixture_mask_draws_rows_by_weight_and_each_component_keeps_to_its_segments():
    """A row is one component's mask, drawn with its weight; a pixels-only block row hides no label."""
    g = torch.Generator().manual_seed(0)
    mixture = MixtureMask(maskers=(RandomMask(), BlockMask(("pixels",), min_area=4)), weights=(0.25, 0.75))
    ratio = torch.full((4000, 2), 0.5, dtype=torch.float64)
    ratio[:, 0] = 1.0  # a random row hides its label; a block row never does
    mask = mixture(GRID, 4000, ratio=ratio, generator=g)
    random_rows = mask[:, 0]
    assert random_rows.double().mean().item() == pytest.approx(0.25, abs=0.02)  # 3.2 standard errors
    assert (mask[:, 1:].sum(1) == 32).all()
    with pytest.raises(ValueError, match="weights"):
        MixtureMask(maskers=(RandomMask(),), weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="at least one"):
        MixtureMask()


def test_edge_mask_hides_whole_lines_from_the_chosen_edge():
    """ratio 0.5 from the bottom is exactly the bottom half; 0.3 of a 8x8 grid from the left is the two
    leftmost columns whole plus 3 of the third; each edge is drawn about equally often."""
    g = torch.Generator().manual_seed(0)
    bottom = EdgeMask(edges=("bottom",))(Layout.grid(8, 8), 5, ratio=0.5, generator=g).view(5, 8, 8)
    assert bottom[:, 4:].all() and not bottom[:, :4].any()
    left = EdgeMask(edges=("left",))(Layout.grid(8, 8), 5, ratio=0.3, generator=g).view(5, 8, 8)
    assert left[:, :, :2].all() and (left[:, :, 2].sum(1) == 19 - 16).all() and not left[:, :, 3:].any()
    mask = EdgeMask()(Layout.grid(8, 8), 4000, ratio=0.125, generator=g).view(4000, 8, 8)
    shares = [mask[:, 0].all(1).double().mean().item(), mask[:, 7].all(1).double().mean().item(),
              mask[:, :, 0].all(1).double().mean().item(), mask[:, :, 7].all(1).double().mean().item()]
    assert all(abs(s - 0.25) < 0.025 for s in shares), shares  # 3.7 standard errors
    with pytest.raises(ValueError, match="edges"):
        EdgeMask(edges=("middle",))
