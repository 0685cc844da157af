"""SMITH (P62): block cutting, exact word and block masks, hidden blocks kept from the document
encoder, the masked block prediction loss against hand-made and brute-force cases."""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from unmask.data.long_files import PAD, cut_blocks, encode_lines, pack
from unmask.nn.hierarchical import HierarchicalConfig, HierarchicalEncoder
from unmask.objectives.smith import SMITH, block_mask, block_prediction_loss, word_mask

V, K, L = 50, 6, 8


def model(**kw) -> HierarchicalEncoder:
    torch.manual_seed(0)
    return HierarchicalEncoder(HierarchicalConfig(V, L, K, dim=16, block_depth=1, doc_depth=1, heads=2, **kw))


def documents(seed: int = 0, b: int = 4) -> torch.Tensor:
    """Long[b, K, L]: random ids, ragged blocks, and rows with fewer real blocks than K."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (b, K, L), generator=g)
    lengths = torch.randint(1, L + 1, (b, K), generator=g)
    tokens[torch.arange(L) >= lengths[..., None]] = PAD
    real_blocks = torch.tensor([K, 1, 3, K - 1, 2, K, 4, K])[:b]
    tokens[torch.arange(K)[None, :] >= real_blocks[:, None]] = PAD
    return tokens


# block cutting -----------------------------------------------------------------------------------
def test_cut_blocks_hand_case():
    lines = [[1, 2], [3, 4, 5], [6], [], [7, 8, 9, 10, 11, 12]]
    assert cut_blocks(lines, 4) == [[1, 2], [3, 4, 5, 6], [7, 8, 9, 10], [11, 12]]


def test_cut_blocks_keeps_every_token_once_in_order_and_whole_lines():
    g = torch.Generator().manual_seed(1)
    for budget in (1, 3, 7, 16):
        lines = [torch.randint(0, 100, (int(n),), generator=g).tolist()
                 for n in torch.randint(0, 12, (40,), generator=g)]
        blocks = cut_blocks(lines, budget)
        assert [t for b in blocks for t in b] == [t for line in lines for t in line]
        assert all(1 <= len(b) <= budget for b in blocks)
        starts, at = [], 0
        for b in blocks:
            starts.append(at)
            at += len(b)
        # a line that fits the budget is never split across blocks
        at = 0
        for line in lines:
            if 0 < len(line) <= budget:
                inside = [s for s in starts if at < s < at + len(line)]
                assert not inside, (budget, line)
            at += len(line)
    with pytest.raises(ValueError, match="budget"):
        cut_blocks([[1]], 0)


def test_blocks_of_real_source_decode_to_the_file(tmp_path):
    pytest.importorskip("tokenizers")
    from unmask.data.code import read_source, stdlib_root, train_tokenizer
    text = read_source(stdlib_root() / "bisect.py")
    tok = train_tokenizer([text], vocab_size=300)
    blocks = cut_blocks(encode_lines(tok, text), 16)
    assert tok.decode([t for b in blocks for t in b]) == text
    # every block holds whole lines unless a line alone exceeds the budget
    assert all(len(b) <= 16 for b in blocks)


def test_load_long_files_pairs_continue_their_queries(tmp_path):
    pytest.importorskip("tokenizers")
    from unmask.data.code import read_source, split_of, stdlib_root
    from unmask.data.long_files import load_long_files
    names = ["bisect.py", "heapq.py", "textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "colorsys.py"]
    for n in names:
        shutil.copyfile(stdlib_root() / n, tmp_path / n)
    test_share = 0.6  # textwrap.py and fnmatch.py held out
    held = [n for n in names if split_of(n, test_share) == "test"]
    assert held and len(held) < len(names)
    c = load_long_files(block_length=16, blocks=4, vocab_size=400, root=tmp_path, min_file_bytes=1,
                        test_share=test_share)
    assert c.train.shape[1:] == (4, 16) and (c.train[:, :, 0] >= 0).all()  # full training documents
    assert set(c.window_halves.files) <= set(held) and sorted(set(c.file_halves.files)) == sorted(held)

    def text(doc):
        return c.tokenizer.decode(doc[doc >= 0])

    for q, a, f in zip(c.window_halves.queries, c.window_halves.answers, c.window_halves.files, strict=True):
        assert text(q) + text(a) in read_source(tmp_path / f)
    for q, f in zip(c.file_halves.queries, c.file_halves.files, strict=True):
        assert read_source(tmp_path / f).startswith(text(q))


def test_pack_pads_and_rejects_empty_documents():
    out = pack([[[1, 2], [3]], [[4]]], blocks=3, block_length=2)
    assert out.tolist() == [[[1, 2], [3, -1], [-1, -1]], [[4, -1], [-1, -1], [-1, -1]]]
    with pytest.raises(ValueError, match="blocks"):
        pack([[]], blocks=3, block_length=2)


# masks -------------------------------------------------------------------------------------------
def test_word_mask_hides_the_exact_count_of_real_tokens_per_block():
    tokens = documents(b=8)
    valid = tokens >= 0
    for ratio in (0.15, 0.5, 1.0):
        hidden = word_mask(valid, ratio, torch.Generator().manual_seed(3))
        assert not (hidden & ~valid).any()
        expected = torch.round(valid.sum(-1).double() * ratio).long()
        assert torch.equal(hidden.sum(-1), expected)


def test_block_mask_hides_exactly_the_asked_count_of_real_blocks():
    tokens = documents(b=8)
    block_valid = (tokens >= 0).any(-1)
    for count in (1, 2, 3, K):
        hide, slots, real = block_mask(block_valid, count, torch.Generator().manual_seed(count))
        assert not (hide & ~block_valid).any()
        assert torch.equal(hide.sum(1), block_valid.sum(1).clamp(max=count))
        assert slots.shape == (8, count) and torch.equal(real.sum(1), hide.sum(1))
        assert torch.equal(hide.gather(1, slots), real)  # the real slots are the hidden blocks
    # every real block gets hidden sometimes: the choice is random, not the first blocks
    seen = torch.zeros(K, dtype=torch.bool)
    full = torch.ones(1, K, dtype=torch.bool)
    for s in range(60):
        seen |= block_mask(full, 2, torch.Generator().manual_seed(s))[0][0]
    assert seen.all()


def test_hidden_blocks_never_reach_the_document_encoder():
    m = model().eval()
    tokens = documents(b=4)
    block_valid = (tokens >= 0).any(-1)
    hide = block_mask(block_valid, 2, torch.Generator().manual_seed(0))[0]
    seen = []
    m.doc_encoder.register_forward_hook(lambda mod, args, out: seen.append((args[0].detach(), out.detach())))
    _, emb = m.encode_blocks(tokens)
    m.encode_document(emb, block_valid, hide)
    x, out = seen[-1]
    assert torch.allclose(x[hide], (m.block_mask + m.block_pos.expand(4, -1, -1))[hide])
    assert torch.allclose(x[~hide], (emb + m.block_pos)[~hide])
    # new contents in the hidden blocks leave the document encoder's input and output unchanged...
    changed = tokens.clone()
    changed[hide] = torch.where(tokens[hide] >= 0, (tokens[hide] + 7) % V, PAD)
    m.encode_document(m.encode_blocks(changed)[1], block_valid, hide)
    assert torch.equal(seen[-1][0], x) and torch.equal(seen[-1][1], out)
    # ...while new contents in a visible block change them
    shown = tokens.clone()
    row = 0
    j = int((~hide[row] & block_valid[row]).nonzero()[0])
    shown[row, j] = torch.where(tokens[row, j] >= 0, (tokens[row, j] + 7) % V, PAD)
    m.encode_document(m.encode_blocks(shown)[1], block_valid, hide)
    assert not torch.allclose(seen[-1][1], out)


# the block prediction loss -----------------------------------------------------------------------
def test_block_prediction_loss_hand_case():
    predicted = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    # scores: [[1, 0, .5], [0, 2, 1], [1, 1, 1]]
    e = math.e

    def nll(own, row):
        return -math.log(math.exp(own) / sum(math.exp(s) for s in row))

    expected = (nll(1, [1, 0, .5]) + nll(2, [0, 2, 1]) + nll(1, [1, 1, 1])) / 3
    loss, acc = block_prediction_loss(predicted, candidates)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == pytest.approx(2 / 3)  # row 2 ties; argmax takes column 0
    # a padding slot is neither a target nor a candidate
    loss, acc = block_prediction_loss(predicted, candidates, torch.tensor([True, True, False]))
    expected = (-math.log(e / (e + 1)) + -math.log(e**2 / (1 + e**2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6) and acc.item() == 1.0
    loss, acc = block_prediction_loss(predicted, candidates, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and acc.item() == 0.0


def test_objective_block_loss_equals_a_brute_force_over_the_batchs_hidden_blocks():
    m = model()
    obj = SMITH(m, words=False, hidden_blocks=2)
    tokens = documents(b=4)
    out = obj({"tokens": tokens}, torch.Generator().manual_seed(5))
    block_valid = (tokens >= 0).any(-1)
    hide = block_mask(block_valid, 2, torch.Generator().manual_seed(5))[0]
    _, emb = m.encode_blocks(tokens)  # nothing hidden inside the blocks (words=False)
    doc = m.encode_document(emb, block_valid, hide)
    places = hide.nonzero().tolist()
    assert len(places) == int(block_valid.sum(1).clamp(max=2).sum())
    total = 0.0
    for b, j in places:
        pred = obj.predict(doc[b, j])
        scores = torch.stack([pred @ emb[b2, j2] for b2, j2 in places])  # every hidden block of the batch
        total -= torch.log_softmax(scores, 0)[places.index([b, j])]
    assert out.metrics["block_loss"].item() == pytest.approx(total.item() / len(places), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.metrics["block_loss"].item(), rel=1e-6)


def test_objective_word_term_and_options():
    m = model()
    tokens = documents(b=4)
    out = SMITH(m, blocks=False, word_ratio=0.5)({"tokens": tokens}, torch.Generator().manual_seed(2))
    hidden = word_mask(tokens >= 0, 0.5, torch.Generator().manual_seed(2))
    words, _ = m.encode_blocks(tokens.masked_fill(hidden, m.mask_id))
    expected = F.cross_entropy(m.head(words, hidden), tokens[hidden])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "block_loss" not in out.metrics
    out.loss.backward()
    assert all(p.grad is None for p in m.doc_encoder.parameters())  # the baseline leaves it untrained
    both = SMITH(m)({"tokens": tokens}, torch.Generator().manual_seed(2))
    assert both.loss.item() == pytest.approx((both.metrics["word_loss"] + both.metrics["block_loss"]).item(),
                                             rel=1e-6)
    assert all(v.ndim == 0 and not v.requires_grad for v in both.metrics.values())
    with pytest.raises(ValueError, match="at least one term"):
        SMITH(m, words=False, blocks=False)
    with pytest.raises(ValueError, match="hidden_blocks"):
        SMITH(m, hidden_blocks=K + 1)
    with pytest.raises(ValueError, match="word_ratio"):
        SMITH(m, word_ratio=0.0)
    with pytest.raises(ValueError, match="tokens must be"):
        SMITH(m)({"tokens": tokens[:, :, :4]})


def test_embed_is_per_document():
    m = model().eval()
    tokens = documents(b=3)
    e = m.embed(tokens)
    # an embedding is the row's own: a single row gives the same as in the batch
    one = m.embed(tokens[1:2])
    assert torch.allclose(one["document"], e["document"][1:2], atol=1e-6)
    assert torch.allclose(one["tokens"], e["tokens"][1:2], atol=1e-6)
