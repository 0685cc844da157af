"""Insertion language model (Patel et al. 2025, arXiv:2505.05755): hand-computed deletion targets and
open gaps, the loss against a direct computation, exact deletion counts, an exact toy whose sequence
law the sampler must reproduce, constrained gaps, given tokens kept in order, batch independence at
temperature 0, and one-line errors for bad input."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from host_syncs import count_host_syncs
from unmask.layout import Layout
from unmask.nn import ModelConfig
from unmask.objectives.insertion import (
    InsertionLM,
    InsertionLogits,
    InsertionModel,
    deletion,
    draw_deletion,
    insertion_loss,
)
from unmask.sampling.insertion import insert_generate

pytestmark = pytest.mark.usefixtures("one_thread")

V = 4
T, F_ = True, False


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tiny_model(length=8, vocab=V, seed=0):
    torch.manual_seed(seed)
    return InsertionModel(ModelConfig(vocab, Layout.seq(length), dim=16, depth=2, heads=2)).eval()


# targets and open gaps, by hand --------------------------------------------------------------------
def test_a_small_deletion_gives_the_hand_computed_gaps_targets_and_stop_labels():
    tokens = torch.tensor([[1, 2, 1, 3, 2], [1, 2, 2, 3, 0], [3, 1, 0, 2, 2]])
    deleted = torch.tensor([[F_, T, T, F_, T],  # b, c after the first kept token; e after the last
                            [F_, T, T, F_, F_],  # two 2s in one gap
                            [F_, F_, F_, F_, F_]])  # nothing deleted
    d = deletion(tokens, deleted)
    assert d.kept.tolist() == [[1, 3, 0, 0, 0], [1, 3, 0, 0, 0], [3, 1, 0, 2, 2]]
    assert d.valid.sum(1).tolist() == [2, 3, 5]
    assert d.count.tolist() == [3, 2, 0] and d.stop.tolist() == [False, False, True]
    q = d.targets(V)  # [3, 6, V]
    want = torch.zeros(3, 6, V)
    want[0, 1, 2] = want[0, 1, 1] = want[0, 2, 2] = 1 / 3  # gap 1: {2, 1}; gap 2 (after the 3): {2}
    want[1, 1, 2] = 1.0  # gap 1: {2, 2}, normalised by k = 2
    assert torch.equal(q, want)
    # no prompt: every gap up to the kept length is open
    assert d.open.tolist() == [[T, T, T, F_, F_, F_], [T, T, T, T, F_, F_], [T] * 6]


def test_prompt_and_padding_close_the_gaps_inside_the_given_tokens():
    tokens = torch.tensor([[1, 2, 3, 0, 0], [1, 2, 3, 2, 0]])
    prompt = torch.tensor([[T, T, F_, F_, F_], [T, T, F_, F_, F_]])
    padding = torch.tensor([[F_, F_, F_, T, T], [F_, F_, F_, F_, T]])
    deleted = torch.tensor([[F_, F_, T, F_, F_], [F_, F_, F_, F_, F_]])
    d = deletion(tokens, deleted, prompt, padding)
    assert d.kept.tolist() == [[1, 2, 0, 0, 0], [1, 2, 3, 2, 0]]
    # row 0: BOS|1 and 1|2 lie inside given tokens; the 3 deleted after the 2 opens gap 2
    # row 1: nothing deleted; gaps next to the answer tokens 3, 2 are open, the end included
    assert d.open.tolist() == [[F_, F_, T, F_, F_, F_], [F_, F_, T, T, T, F_]]
    assert d.stop.tolist() == [False, True]
    assert d.targets(V)[0, 2, 3] == 1.0 and d.targets(V).sum() == 1.0


# the loss --------------------------------------------------------------------------------------
def manual_loss(gaps, stop, tokens, deleted, open_):
    """The loss of one row written out: softmax over open (gap, token) pairs, -sum q log p, and BCE."""
    s, v = len(gaps), len(gaps[0])
    pairs = [(g, t) for g in range(s) for t in range(v) if open_[g]]
    z = math.log(sum(math.exp(gaps[g][t]) for g, t in pairs)) if pairs else 0.0
    kept_before, where = 0, []
    for token, gone in zip(tokens, deleted, strict=True):
        if gone:
            where.append((kept_before, token))
        else:
            kept_before += 1
    joint = sum(z - gaps[g][t] for g, t in where) / len(where) if where else 0.0
    label = 0.0 if where else 1.0
    p = 1 / (1 + math.exp(-stop))
    return joint, -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_the_loss_on_hand_built_logits_equals_the_direct_computation():
    tokens = torch.tensor([[1, 2, 1, 3, 2], [1, 2, 2, 3, 0], [3, 1, 0, 2, 2]])
    deleted = torch.tensor([[F_, T, T, F_, T], [F_, T, T, F_, F_], [F_, F_, F_, F_, F_]])
    d = deletion(tokens, deleted)
    gaps = torch.randn(3, 6, V, generator=gen(0), dtype=torch.float64).float() * 2
    stop = torch.tensor([0.3, -1.2, 2.0])
    joint, bce = insertion_loss(InsertionLogits(gaps, stop), d)
    for b in range(3):
        want_joint, want_bce = manual_loss(gaps[b].tolist(), stop[b].item(), tokens[b].tolist(),
                                           deleted[b].tolist(), d.open[b].tolist())
        assert joint[b].item() == pytest.approx(want_joint, rel=1e-5)
        assert bce[b].item() == pytest.approx(want_bce, rel=1e-5)
    # the joint term is the cross-entropy against the normalised counts of `targets`
    logp = gaps.masked_fill(~d.open[..., None], float("-inf")).reshape(3, -1).log_softmax(1)
    q = d.targets(V).reshape(3, -1)
    assert torch.allclose(joint, -(q * logp.nan_to_num(neginf=0.0)).sum(1), atol=1e-5)


class Fixed(torch.nn.Module):
    """A network whose outputs are a fixed table; it records what it read."""

    def __init__(self, n, seed=0):
        super().__init__()
        self.gaps = torch.nn.Parameter(torch.randn(1, n + 1, V, generator=gen(seed)))
        self.stop = torch.nn.Parameter(torch.randn(1, generator=gen(seed + 1)))
        self.read = []

    def forward(self, tokens, valid):
        self.read.append((tokens.clone(), valid.clone()))
        b = tokens.shape[0]
        return InsertionLogits(self.gaps.expand(b, -1, -1), self.stop.expand(b))


def test_the_objective_deletes_exactly_round_t_d_and_its_loss_is_the_direct_one():
    b, n = 64, 9
    tokens = torch.randint(0, V, (b, n), generator=gen(1))
    prompt = torch.rand(b, n, generator=gen(2)) < 0.3
    padding = torch.arange(n) >= torch.randint(3, n + 1, (b,), generator=gen(3))[:, None]
    prompt &= ~padding
    net = Fixed(n)
    with count_host_syncs() as seen:
        out = InsertionLM(net, stop_weight=0.5)({"tokens": tokens, "prompt": prompt, "padding": padding}, gen(7))
    assert seen.count == 0, seen.report()
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in out.metrics.values())
    # the same draw, made again: t is the generator's first float64 uniform per row
    deletable = ~prompt & ~padding
    t = torch.rand(b, generator=gen(7), dtype=torch.float64)
    deleted = draw_deletion(deletable, gen(7))
    assert deleted.sum(1).tolist() == [round(x * d) for x, d in zip(t.tolist(), deletable.sum(1).tolist(),
                                                                        strict=True)]
    assert not (deleted & ~deletable).any()
    d = deletion(tokens, deleted, prompt, padding)
    kept, valid = net.read[0]
    assert torch.equal(kept, d.kept) and torch.equal(valid, d.valid)
    rows = [manual_loss(net.gaps[0].tolist(), net.stop.item(), tokens[r].tolist(), deleted[r].tolist(),
                        d.open[r].tolist()) for r in range(b)]
    want = sum(j for j, _ in rows) / b + 0.5 * sum(s for _, s in rows) / b
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    with_deletions = [j for (j, _), k in zip(rows, deleted.sum(1).tolist(), strict=True) if k]
    assert out.metrics["insert_nats"].item() == pytest.approx(sum(with_deletions) / len(with_deletions), rel=1e-5)
    out.loss.backward()
    assert torch.isfinite(net.gaps.grad).all()


def test_clean_share_leaves_exactly_the_drawn_rows_whole():
    b, n = 2000, 12
    deletable = torch.ones(b, n, dtype=torch.bool)
    deleted = draw_deletion(deletable, gen(4), clean_share=0.3)
    g = gen(4)  # the same draws again: t, the noise, then one uniform per row for "clean"
    t = torch.rand(b, generator=g, dtype=torch.float64)
    torch.rand(b, n, generator=g, dtype=torch.float64)
    clean = torch.rand(b, generator=g, dtype=torch.float64) < 0.3
    want = torch.where(clean, 0, torch.round(t * n).long())
    assert torch.equal(deleted.sum(1), want)
    assert 0.27 < clean.double().mean().item() < 0.33  # the share itself, at this seed
    with pytest.raises(ValueError, match=r"clean_share must lie in \[0, 1\)"):
        InsertionLM(tiny_model(), clean_share=1.0)


def test_padding_is_not_attended_to():
    model = tiny_model(length=8)
    tokens = torch.randint(0, V, (2, 8), generator=gen(0))
    valid = torch.arange(8) < torch.tensor([[5], [8]])
    a = model(tokens, valid)
    other = torch.where(valid, tokens, (tokens + 1) % V)
    b = model(other, valid)
    assert torch.allclose(a.gaps[0, :6], b.gaps[0, :6], atol=1e-6) and torch.allclose(a.stop, b.stop, atol=1e-6)
    short = model(tokens[:, :5], valid[:, :5])  # the same row, read without the padded places
    assert torch.allclose(short.gaps[0], a.gaps[0, :6], atol=1e-5) and torch.allclose(short.stop[0], a.stop[0],
                                                                                      atol=1e-5)


# an exact toy ---------------------------------------------------------------------------------
class Table:
    """An ILM given by a fixed table: for every sequence of up to `most` tokens over V=2, gap logits
    [most + 1, 2] and a stop logit (stop when sigmoid >= 0.5, i.e. logit >= 0)."""

    vocab_size = 2

    def __init__(self, most=3, seed=0):
        self.max_length = most
        self.seqs = [s for n in range(most + 1) for s in itertools.product(range(2), repeat=n)]
        self.index = {s: i for i, s in enumerate(self.seqs)}
        g = gen(seed)
        self.gaps = torch.randn(len(self.seqs), most + 1, 2, generator=g, dtype=torch.float64) * 1.5
        self.stop = torch.randn(len(self.seqs), generator=g, dtype=torch.float64) * 2
        self.stop[0] = -1.0  # the empty sequence never stops

    def __call__(self, tokens, valid):
        rows = [self.index[tuple(t[v].tolist())] for t, v in zip(tokens, valid, strict=True)]
        return self.gaps[rows].float(), self.stop[rows].float()

    def law(self, prompt, open_, temperature):
        """The exact distribution of final sequences, by enumerating every insertion path."""
        out: dict[tuple, float] = {}

        def walk(seq, gaps_open, p):
            i = self.index[seq]
            if len(seq) == self.max_length or self.stop[i] >= 0:
                out[seq] = out.get(seq, 0.0) + p
                return
            pairs = [(g, v) for g in range(len(seq) + 1) for v in range(2) if gaps_open[g]]
            w = torch.stack([self.gaps[i, g, v] / temperature for g, v in pairs]).softmax(0)  # float64
            for (g, v), q in zip(pairs, w.tolist(), strict=True):
                walk(seq[:g] + (v,) + seq[g:], gaps_open[: g + 1] + (True,) + gaps_open[g + 1 :], p * q)

        walk(tuple(prompt), tuple(open_), 1.0)
        return out


@pytest.mark.parametrize("prompt, open_, temperature", [((), (True,), 1.0), ((1,), (False, True), 0.7),
                                                        ((1, 1), (True, False, False), 1.0)])
def test_sampled_sequences_follow_the_exact_law_of_a_table_model(prompt, open_, temperature):
    """40,000 rows at a fixed seed; tolerance TV < 0.015 (about 3x the expected sampling error) and a
    chi-square goodness-of-fit p-value above 1e-3."""
    table, n = Table(), 40_000
    exact = table.law(prompt, open_, temperature)
    x = torch.tensor([list(prompt)] * n, dtype=torch.long).reshape(n, len(prompt))
    gaps = torch.tensor([list(open_)] * n)
    out = insert_generate(table, x, max_length=3, open_gaps=gaps, generator=gen(11), temperature=temperature)
    counts: dict[tuple, int] = {}
    for row in out.rows():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) <= set(exact)
    keys = sorted(exact)
    seen = torch.tensor([counts.get(k, 0) for k in keys], dtype=torch.float64)
    want = torch.tensor([exact[k] for k in keys], dtype=torch.float64)
    assert 0.5 * (seen / n - want).abs().sum() < 0.015
    assert chisquare(seen.numpy(), (want / want.sum()).numpy() * n).pvalue > 1e-3
    # one call per insertion, and one more that a row stopped on
    assert out.nfe == (out.lengths - len(prompt) + out.stopped.long()).max().item()


# constrained gaps, given tokens, batches -----------------------------------------------------------
def test_insertions_stay_inside_the_open_region_and_given_tokens_keep_their_order():
    model = tiny_model(length=10)
    n = 200
    left, right = [1, 2], [3, 0, 2]
    prompt = torch.tensor([left + right] * n)
    open_gaps = torch.zeros(n, 6, dtype=torch.bool)
    open_gaps[:, 2] = True  # only between the left and the right context
    out = insert_generate(model, prompt, max_length=10, open_gaps=open_gaps, generator=gen(0), temperature=1.5,
                          stop_threshold=0.9)
    assert (out.lengths > 5).any()
    for row, ins, m in zip(out.tokens.tolist(), out.inserted.tolist(), out.lengths.tolist(), strict=True):
        assert row[:2] == left and row[m - 3 : m] == right
        assert ins[:m] == [False] * 2 + [True] * (m - 5) + [False] * 3
    # no constraint: the given tokens are still all there, unchanged, in their order
    out = insert_generate(model, prompt[:50], max_length=10, generator=gen(1), stop_threshold=0.9)
    for row, ins, m in zip(out.tokens.tolist(), out.inserted.tolist(), out.lengths.tolist(), strict=True):
        assert [t for t, i in zip(row[:m], ins[:m], strict=True) if not i] == left + right
        assert sum(ins) == m - 5 and row[m:] == [-1] * (10 - m)


def test_rows_decode_the_same_alone_and_in_a_batch_at_temperature_zero():
    model = tiny_model(length=12, seed=3)
    prompt = torch.tensor([[1, 2, 3, 0, 1], [2, 2, 0, 0, 0], [3, 0, 0, 0, 0], [0, 1, 2, 3, 3]])
    lengths = torch.tensor([5, 2, 0, 4])
    open_gaps = torch.tensor([[F_, F_, T, F_, F_, F_], [T, T, T, F_, F_, F_], [T, F_, F_, F_, F_, F_],
                              [F_, F_, F_, F_, T, F_]])
    kw = {"max_length": 12, "temperature": 0.0, "stop_threshold": 0.47}
    together = insert_generate(model, prompt, lengths=lengths, open_gaps=open_gaps, **kw)
    assert len(set(together.lengths.tolist())) > 1  # rows stop at different steps
    for b in range(4):
        alone = insert_generate(model, prompt[b : b + 1, : max(int(lengths[b]), 1)], lengths=lengths[b : b + 1],
                                open_gaps=open_gaps[b : b + 1, : max(int(lengths[b]), 1) + 1], **kw)
        assert alone.rows()[0] == together.rows()[b], f"row {b}"
        assert torch.equal(alone.inserted[0], together.inserted[b])


def test_nfe_counts_model_calls_and_the_stop_head_ends_rows():
    class Says(Table):
        def __init__(self, stop):
            super().__init__()
            self.stop[:] = stop

    out = insert_generate(Says(5.0), torch.zeros(3, 1, dtype=torch.long), max_length=3, generator=gen(0))
    assert out.nfe == 1 and out.lengths.tolist() == [1, 1, 1] and out.stopped.all() and not out.inserted.any()
    out = insert_generate(Says(-5.0), torch.zeros(3, 1, dtype=torch.long), max_length=3, generator=gen(0))
    assert out.nfe == 2 and out.lengths.tolist() == [3, 3, 3] and not out.stopped.any()


# bad input -----------------------------------------------------------------------------------------
def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("change, match", [
    ({"prompt": torch.zeros(2, 3)}, "prompt must be Long"),
    ({"prompt": torch.tensor([[0, 9, 1]])}, "prompt ids must lie in 0..3"),
    ({"max_length": 0}, "max_length must be an integer >= 1"),
    ({"max_length": 9}, "exceeds the 8 tokens the model reads"),
    ({"max_length": 2}, "more than max_length=2"),
    ({"lengths": torch.tensor([4])}, "lengths must lie in 0..3"),
    ({"open_gaps": torch.ones(1, 3, dtype=torch.bool)}, r"open_gaps must be Bool\[1, 4\]"),
    ({"open_gaps": torch.zeros(1, 4, dtype=torch.bool)}, "row 0 has no open gap"),
    ({"lengths": torch.tensor([1]), "open_gaps": torch.tensor([[F_, F_, T, F_]])}, "past the end of row 0"),
    ({"stop_threshold": 0.0}, r"stop_threshold must lie in \(0, 1\]"),
    ({"stop_threshold": float("nan")}, "stop_threshold"),
    ({"temperature": -1.0}, "temperature must be a number >= 0"),
])
def test_bad_sampler_inputs_are_one_line_errors(change, match):
    kw = {"prompt": torch.tensor([[0, 1, 2]]), "max_length": 6} | change
    with pytest.raises(ValueError, match=match) as e:
        insert_generate(tiny_model(), kw.pop("prompt"), **kw)
    one_line(e)


def test_a_model_that_breaks_the_contract_is_named():
    class Wrong(torch.nn.Module):
        vocab_size = V

        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, tokens, valid):
            return self.out(tokens)

    prompt = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match=r"expected gaps Float\[1, 5, 4\] and stop Float\[1\]") as e:
        insert_generate(Wrong(lambda t: (torch.zeros(1, 4, V), torch.zeros(1))), prompt, max_length=4)
    one_line(e)
    with pytest.raises(ValueError, match="non-finite logits for row 0 at call 1") as e:
        insert_generate(Wrong(lambda t: (torch.full((1, 5, V), float("nan")), -torch.ones(1))), prompt, max_length=4)
    one_line(e)
    with pytest.raises(ValueError, match="vocabulary size"):
        insert_generate(lambda t, v: None, prompt, max_length=4)


@pytest.mark.parametrize("batch, match", [
    ({"tokens": torch.zeros(2, 3)}, r"batch\['tokens'\] must be Long\[B, n\], got float32 \[2, 3\]"),
    ({"tokens": torch.zeros(2, 3, dtype=torch.long), "prompt": torch.zeros(2, 4, dtype=torch.bool)},
     r"batch\['prompt'\] must be Bool\[2, 3\]"),
    ({"tokens": torch.zeros(2, 3, dtype=torch.long), "padding": torch.zeros(2, 3)}, r"batch\['padding'\]"),
])
def test_bad_batches_are_one_line_errors(batch, match):
    with pytest.raises(ValueError, match=match) as e:
        InsertionLM(tiny_model(length=3))(batch, gen(0))
    one_line(e)
    with pytest.raises(ValueError, match="stop_weight"):
        InsertionLM(tiny_model(), stop_weight=-1.0)


def test_ilm_code_training_rows_keep_a_window_and_a_span_inside_it():
    from unmask.recipes.ilm_code import Objective, training_rows

    o = Objective(span_share=0.5, span_min=3, span_max=9, min_length=10)
    prompt, padding = training_rows(500, 24, o, seed=0)
    kept = (~padding).sum(1)
    assert kept.min() >= 10 and kept.max() <= 24 and len(set(kept.tolist())) > 5
    for given, pad in zip(prompt.tolist(), padding.tolist(), strict=True):
        window = [i for i, p in enumerate(pad) if not p]
        assert window == list(range(window[0], window[-1] + 1))  # one contiguous window
        if any(given):
            span = [i for i, g in enumerate(given) if not g]
            assert span == list(range(span[0], span[-1] + 1)) and 3 <= len(span) <= 9
            assert set(span) <= set(window)
    assert 0.4 < prompt.any(1).double().mean().item() < 0.6
