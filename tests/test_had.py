"""HAD (P35) across tokenisations that do not align: the byte alignment of BPE tokens (every byte once,
the tokenizer's offsets, multi-byte characters), grouped masking (whole groups, exact counts), and the
distillation term (visible groups only: zero gradient at hidden bytes; brute-force value)."""

import pytest
import torch
from torch import nn

from unmask.data.code import train_tokenizer
from unmask.data.token_alignment import BYTE_PAD, BYTE_VOCAB, TokenBytes, align_text, byte_alphabet, byte_spans
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives.had import HAD, group_distill_loss, group_mask, group_means

TEXTS = ["café = 'naïve'  # déjà vu\n", "名前 = '日本語'  # 🐍🐍 snake\n", "def f(x):\n    return x + 1\n",
         "s = 'Grüße, señor: ½ €5'\n", "print('日本語 café')\n"] * 20
STRINGS = ["aé", "x = '日本語🐍é'  # café\n", "🐍", "naïve déjà-vu ½€", "def f():\n\treturn 'Grüße'\n", "ab🐍🐍cd"]
LONG = [STRINGS[1], STRINGS[3], STRINGS[4], STRINGS[1][::-1]]  # 12 tokens or more each


@pytest.fixture(scope="module")
def tokenizer():
    # merges of whole multi-byte characters (é, 日) as well as tokens that split a character (a rare emoji)
    return train_tokenizer(TEXTS, vocab_size=300)


# alignment ----------------------------------------------------------------------------------------
def test_alphabet_is_the_byte_level_one():
    from tokenizers import pre_tokenizers

    alphabet = byte_alphabet()
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["a"] == 97 and alphabet["Ġ"] == 32 and alphabet["Ċ"] == 10  # GPT-2's space and newline


def test_byte_spans_by_hand():
    assert byte_spans("é🐍a", [(0, 1), (1, 2), (2, 3), (0, 3)]) == [(0, 2), (2, 6), (6, 7), (0, 7)]


def test_aligned_bytes_by_hand(tokenizer):
    alignment, _ = align_text(tokenizer, "aé")
    assert alignment.bytes.tolist() == [97, 0xC3, 0xA9]
    assert alignment.lengths.sum() == 3


@pytest.mark.parametrize("text", STRINGS)
def test_every_byte_once_and_the_offsets(tokenizer, text):
    alignment, offsets = align_text(tokenizer, text)
    raw = text.encode("utf-8")
    assert bytes(alignment.bytes.tolist()) == raw
    t = len(offsets)
    # every byte lies in exactly one group, groups in order and contiguous
    assert alignment.group.tolist() == [j for j in range(t) for _ in range(int(alignment.lengths[j]))]
    assert (alignment.lengths >= 1).all() and int(alignment.lengths.sum()) == len(raw)
    spans = byte_spans(text, offsets)
    ours = [(int(s), int(s + n)) for s, n in zip(alignment.starts, alignment.lengths, strict=True)]
    for j, (mine, theirs) in enumerate(zip(ours, spans, strict=True)):
        assert theirs[0] <= mine[0] and mine[1] <= theirs[1]  # inside the tokenizer's span
        if not shares_a_character(spans, j):  # a token that splits no character: the same bytes
            assert mine == theirs, (j, mine, theirs)
    # a run of tokens whose spans overlap (they split characters) covers exactly the run's bytes
    first = 0
    for j in range(1, t + 1):
        if j == t or spans[j][0] >= max(s[1] for s in spans[first:j]):
            assert ours[first][0] == spans[first][0] and ours[j - 1][1] == max(s[1] for s in spans[first:j])
            first = j


def shares_a_character(spans, j):
    a, b = spans[j]
    return any(k != j and a < d and c < b for k, (c, d) in enumerate(spans))


def test_the_strings_split_and_merge_characters(tokenizer):
    """The hand-made strings hold both cases the alignment must get right."""
    merged = split = False
    for text in STRINGS:
        alignment, offsets = align_text(tokenizer, text)
        spans = byte_spans(text, offsets)
        for j, (a, b) in enumerate(offsets):
            piece = text[a:b]
            multi = any(len(c.encode()) > 1 for c in piece)
            merged |= multi and not shares_a_character(spans, j) and int(alignment.lengths[j]) > 1
            split |= shares_a_character(spans, j)
    assert merged and split


def test_chunks_pad_cut_and_match_each_row(tokenizer):
    table = TokenBytes.of(tokenizer)
    rows = [tokenizer.encode(t)[:6] for t in LONG[:3]]
    tokens = torch.tensor(rows)  # [3, 6]
    width = 10
    chunks = table.chunks(tokens, width)
    assert chunks.fits.tolist() == [False, True, True]  # one row cut, two padded
    for r in range(len(rows)):
        one = table.align(tokens[r])
        n = min(width, len(one.bytes))
        assert chunks.bytes[r, :n].tolist() == one.bytes[:n].tolist()
        assert chunks.groups[r, :n].tolist() == one.group[:n].tolist()
        assert (chunks.bytes[r, n:] == BYTE_PAD).all() and (chunks.groups[r, n:] == -1).all()
        assert bool(chunks.fits[r]) == (len(one.bytes) <= width)


# grouped masking ----------------------------------------------------------------------------------
def random_groups(rows: int, n: int, n_groups: int, seed: int = 0) -> torch.Tensor:
    """Rows of consecutive groups of 1-4 bytes, fewer groups in some rows, then padding (-1)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((rows, n), -1)
    for r in range(rows):
        pos = 0
        for j in range(n_groups - 3 * (r % 3)):
            size = int(torch.randint(1, 5, (1,), generator=g))
            if pos + size > n:
                break
            out[r, pos : pos + size] = j
            pos += size
    return out


@pytest.mark.parametrize("ratio", [0.15, 0.25, 0.5, 1.0])
def test_group_mask_hides_whole_groups_with_an_exact_count(ratio):
    groups = random_groups(6, 60, 16)
    hidden, hidden_groups = group_mask(groups, 16, ratio, torch.Generator().manual_seed(1))
    for r in range(groups.shape[0]):
        present = sorted(set(groups[r][groups[r] >= 0].tolist()))
        chosen = sorted(set(groups[r][hidden[r]].tolist()))
        assert len(chosen) == round(ratio * len(present))  # half to even: 0.25 * 10 -> 2
        assert chosen == torch.nonzero(hidden_groups[r]).squeeze(1).tolist()
        for j in present:  # all or nothing
            assert hidden[r][groups[r] == j].all() or not hidden[r][groups[r] == j].any()
        assert not hidden[r][groups[r] < 0].any()  # padding is never hidden


def test_group_mask_is_seeded_and_uniform_over_groups():
    groups = random_groups(1, 60, 16)
    a = group_mask(groups, 16, 0.25, torch.Generator().manual_seed(3))[0]
    b = group_mask(groups, 16, 0.25, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)
    # long groups are not favoured: each group is chosen with the same chance, whatever its size
    g = torch.Generator().manual_seed(0)
    hits = sum(group_mask(groups.expand(64, -1), 16, 0.25, g)[1].sum(0) for _ in range(40))  # [16]
    present = int(groups.max()) + 1
    expected = 64 * 40 * round(0.25 * present) / present
    assert (hits[:present] - expected).abs().max() < 0.25 * expected and hits[present:].sum() == 0


def test_group_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="group ids"):
        group_mask(torch.tensor([[0, 5]]), 4, 0.5)
    with pytest.raises(ValueError, match="ratio"):
        group_mask(torch.tensor([[0, 1]]), 2, 1.5)


# distillation -------------------------------------------------------------------------------------
def test_group_means_match_a_loop():
    groups = random_groups(3, 20, 6)
    h = torch.randn(3, 20, 5)
    means, sizes = group_means(h, groups, 6)
    for r in range(3):
        for j in range(6):
            rows = h[r][groups[r] == j]
            assert sizes[r, j] == len(rows)
            want = rows.mean(0) if len(rows) else torch.zeros(5)
            torch.testing.assert_close(means[r, j], want)


def test_distill_reads_visible_groups_only():
    torch.manual_seed(0)
    groups = random_groups(4, 40, 10)
    hidden, hidden_groups = group_mask(groups, 10, 0.3, torch.Generator().manual_seed(0))
    h = torch.randn(4, 40, 8, requires_grad=True)
    target = torch.randn(4, 10, 6)
    head = nn.Linear(8, 6)
    group_distill_loss(h, groups, hidden_groups, target, head).backward()
    grad = h.grad.abs().sum(-1)  # [B, N]
    assert (grad[hidden] == 0).all()  # exactly zero at every hidden byte
    assert (grad[groups < 0] == 0).all()
    assert (grad[~hidden & (groups >= 0)] > 0).all()


def test_distill_value_by_brute_force():
    torch.manual_seed(1)
    groups = random_groups(2, 30, 8)
    _, hidden_groups = group_mask(groups, 8, 0.25, torch.Generator().manual_seed(2))
    h, target, head = torch.randn(2, 30, 4), torch.randn(2, 8, 3), nn.Linear(4, 3)
    errs = []
    for r in range(2):
        for j in range(8):
            rows = h[r][groups[r] == j]
            if len(rows) and not hidden_groups[r, j]:
                t = target[r, j]
                t = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-5)  # LayerNorm without weights
                errs.append(((head(rows.mean(0)) - t) ** 2).mean())
    torch.testing.assert_close(group_distill_loss(h, groups, hidden_groups, target, head), torch.stack(errs).mean())


# the objective ------------------------------------------------------------------------------------
def student(n: int) -> MaskedTokenModel:
    return MaskedTokenModel(ModelConfig(BYTE_VOCAB, Layout.seq(n, name="bytes"), dim=16, depth=1, heads=2,
                                        segment_vocab={"bytes": (0, 256)}))


class RecordingTeacher(nn.Module):
    """A teacher that keeps what it was given."""

    def __init__(self, vocab: int, dim: int = 12):
        super().__init__()
        self.config = type("C", (), {"dim": dim})()
        self.mask_id = vocab
        self.embed = nn.Embedding(vocab + 1, dim)
        self.seen = []

    def features(self, tokens):
        self.seen.append(tokens.clone())
        return self.embed(tokens)


def batch_of(tokenizer, n: int = 48):
    table = TokenBytes.of(tokenizer)
    tokens = torch.tensor([tokenizer.encode(t)[:10] for t in LONG])
    chunks = table.chunks(tokens, n)
    return {"bytes": chunks.bytes, "groups": chunks.groups, "tokens": tokens}


def test_teacher_sees_the_same_groups_hidden_and_stays_frozen(tokenizer):
    batch = batch_of(tokenizer)
    teacher = RecordingTeacher(tokenizer.vocab_size)
    objective = HAD(student(48), teacher, ratio=0.3)
    seen_bytes = []
    features = objective.student.features
    objective.student.features = lambda x: (seen_bytes.append(x.clone()), features(x))[1]
    out = objective(batch, torch.Generator().manual_seed(0))
    out.loss.backward()
    hidden_tokens = teacher.seen[0] == teacher.mask_id  # [B, T]
    hidden_bytes = seen_bytes[0] == objective.student.mask_id  # [B, N]
    expected = hidden_tokens.gather(1, batch["groups"].clamp(min=0)) & (batch["groups"] >= 0)
    assert torch.equal(hidden_bytes, expected)
    assert (hidden_tokens.sum(1) == 3).all()  # round(0.3 * 10) tokens per row
    assert torch.equal(teacher.seen[0][~hidden_tokens], batch["tokens"][~hidden_tokens])
    assert all(p.grad is None and not p.requires_grad for p in objective.teacher.parameters())
    assert objective.head.weight.grad is not None and objective.student.embed.parameters().__next__().grad is not None
    assert set(out.metrics) == {"loss", "distill", "reconstruct", "hidden_acc", "hidden_share"}
    assert all(v.ndim == 0 and not v.requires_grad for v in out.metrics.values())
    HAD(student(48), teacher, ratio=0.3, teacher_sees_hidden=True)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(teacher.seen[-1], batch["tokens"])


def test_either_term_alone(tokenizer):
    batch = batch_of(tokenizer)
    g = torch.Generator
    alone = HAD(student(48), None, distill_weight=0.0)  # the byte MLM baseline: no teacher, no head
    assert alone.head is None and alone.teacher is None
    out = alone(batch, g().manual_seed(0))
    torch.testing.assert_close(out.loss, out.metrics["reconstruct"])
    only = HAD(student(48), RecordingTeacher(tokenizer.vocab_size), reconstruct_weight=0.0)
    out = only(batch, g().manual_seed(0))
    torch.testing.assert_close(out.loss, out.metrics["distill"])
    out.loss.backward()
    assert only.student.head.proj.weight.grad is None  # the byte head is not read
    with pytest.raises(ValueError, match="not both 0"):
        HAD(student(48), None, distill_weight=0.0, reconstruct_weight=0.0)
    with pytest.raises(ValueError, match="needs a teacher"):
        HAD(student(48), None)
