"""MAGNeT's training mask (masking/magnet.py; Ziv et al. 2024, arXiv:2401.04577) and its loss
(objectives.MagnetTokenModeling): the stage structure is exact (streams before the stage given, after
it hidden whole, the stage read back from the mask alone), the span count comes from the appendix C
lookup table, the covered share matches the expectation of s overlapping spans, and the loss reads only
the stage stream's hidden places."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking import MagnetMask, RandomMask
from unmask.masking.magnet import span_rate, starts_for_rate
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MagnetTokenModeling

S, T = 4, 48
LAYOUT = Layout.seq(1, "label") + Layout.streams(S, T)


def test_span_rate_is_appendix_c_formula():
    # 1 - C(T - L, s) / C(T, s), by hand for T=10, L=3, s=2: 1 - 21/45
    assert span_rate(10, 3, 2) == pytest.approx(1 - 21 / 45)
    for s in range(0, 12):
        assert span_rate(T, 3, s) == pytest.approx(1 - math.comb(T - 3, s) / math.comb(T, s))
    assert span_rate(T, 3, 0) == 0.0 and span_rate(T, 3, T - 2) == 1.0


def test_lookup_takes_fewest_starts_reaching_the_rate():
    table = starts_for_rate(T, 3)
    assert len(table) == 101 and table[0] == 0
    assert list(table) == sorted(table)
    for i, s in enumerate(table):
        assert span_rate(T, 3, s) >= i / 100 - 1e-12
        if s > 0:
            assert span_rate(T, 3, s - 1) < i / 100


def test_stage_structure_is_exact():
    b = 64
    mask = MagnetMask()(LAYOUT, b, ratio=torch.rand(b, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
                        generator=torch.Generator().manual_seed(0))
    stage = torch.randint(0, S, (b,), generator=torch.Generator().manual_seed(0))  # the masker's first draw
    assert set(stage.tolist()) == set(range(S))
    assert not mask[:, 0].any()  # the label segment is never hidden
    streams = mask[:, 1:].view(b, S, T)
    for row in range(b):
        k = int(stage[row])
        assert not streams[row, :k].any()
        assert streams[row, k + 1:].all()
        assert streams[row, k].any()  # at least one span start
    masker = MagnetMask()
    assert torch.equal(masker.stage(LAYOUT, mask), stage)
    targets = masker.targets(LAYOUT, mask)
    assert not (targets & ~mask).any()
    want = torch.zeros_like(streams)
    want[torch.arange(b), stage] = streams[torch.arange(b), stage]
    assert torch.equal(targets[:, 1:].view(b, S, T), want)


def test_span_starts_are_the_table_count():
    # with span_len 1 every start hides exactly one place: the count is the table's entry
    masker = MagnetMask(span_len=1)
    rates = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=torch.float64)
    hidden = masker.span_mask(rates, T, torch.Generator().manual_seed(0))
    table = starts_for_rate(T, 1)
    want = [max(1, table[round(100 * float(m))]) for m in rates]
    assert hidden.sum(1).tolist() == want
    # with spans of 3, every run of hidden places not cut by the stream's end is at least 3 long
    spans = MagnetMask(span_len=3).span_mask(torch.full((200,), 0.3, dtype=torch.float64), T,
                                             torch.Generator().manual_seed(0))
    for row in spans.tolist():
        runs, n = [], 0
        for h in row + [False]:
            if h:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        ends_at_end = row[-1]
        assert all(r >= 3 for r in (runs[:-1] if ends_at_end else runs))


@pytest.mark.parametrize("m", [0.2, 0.5, 0.8])
def test_covered_share_matches_expectation(m):
    """Empirical share over 4,000 rows against the exact expectation of s uniform starts with spans cut
    at the end: place t (0-based) is covered unless none of the min(t + 1, L) starts that reach it is
    drawn. Tolerance 0.006 (about five standard errors of the mean); the appendix C formula itself
    (no edge) reaches m and overshoots it by less than one start's L / T."""
    rows, span = 4000, 3
    s = max(1, starts_for_rate(T, span)[round(100 * m)])
    exact = sum(1 - math.comb(T - min(t + 1, span), s) / math.comb(T, s) for t in range(T)) / T
    hidden = MagnetMask(span_len=span).span_mask(torch.full((rows,), m, dtype=torch.float64), T,
                                                 torch.Generator().manual_seed(0))
    assert abs(hidden.double().mean().item() - exact) < 0.006
    assert m <= span_rate(T, span, s) < m + span / T  # one more start covers at most L more places


def test_mask_is_seeded():
    a = MagnetMask()(LAYOUT, 8, ratio=0.5, generator=torch.Generator().manual_seed(3))
    b = MagnetMask()(LAYOUT, 8, ratio=0.5, generator=torch.Generator().manual_seed(3))
    c = MagnetMask()(LAYOUT, 8, ratio=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_refuses_other_segments():
    with pytest.raises(ValueError, match="streams"):
        MagnetMask(segment="label")(LAYOUT, 2)
    with pytest.raises(ValueError, match="span_len"):
        MagnetMask(span_len=0)
    model = MaskedTokenModel(ModelConfig(16, LAYOUT, dim=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="targets"):
        MagnetTokenModeling(model, RandomMask())


def test_loss_reads_only_the_stage_stream():
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(16, LAYOUT, dim=16, depth=1, heads=2))
    objective = MagnetTokenModeling(model, MagnetMask())
    tokens = torch.randint(0, 16, (6, LAYOUT.n), generator=torch.Generator().manual_seed(5))
    out = objective({"tokens": tokens}, torch.Generator().manual_seed(7))
    # the same draws by hand: the cosine ratio, then the mask
    g = torch.Generator().manual_seed(7)
    ratio = torch.cos(torch.rand(6, generator=g, dtype=torch.float64) * math.pi / 2)
    hidden = MagnetMask()(LAYOUT, 6, ratio=ratio, generator=g)
    scored = MagnetMask().targets(LAYOUT, hidden)
    assert scored.sum() < hidden.sum()  # the later streams are hidden but not scored
    logits = model(tokens.masked_fill(hidden, model.mask_id))  # [B, N, V]
    want = F.cross_entropy(logits[scored], tokens[scored])
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.metrics["hidden_share"].item() == pytest.approx(hidden.float().mean().item())
