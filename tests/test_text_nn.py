"""Network options for text: BERT layout with a pruned last block, DeBERTa's EMD, query attention."""

import pytest
import torch

from unmask.layout import Layout
from unmask.nn import BertConfig, BertMaskedModel, EMDConfig, EMDMaskedTokenModel, MaskedTokenModel, ModelConfig
from unmask.nn.query_attention import query_attention

V = 17
LAYOUT = Layout.seq(12)


def tokens(b=4, seed=0):
    return torch.randint(0, V + 1, (b, LAYOUT.n), generator=torch.Generator().manual_seed(seed))


def exact_where(b=4, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    where = torch.zeros(b, LAYOUT.n, dtype=torch.bool)
    for r in range(b):
        where[r, torch.randperm(LAYOUT.n, generator=g)[:k]] = True
    return where


def test_query_attention_with_equal_streams_is_self_attention():
    torch.manual_seed(0)
    block = MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=1, heads=4)).encoder.blocks[0]
    x = torch.randn(2, 12, 16)
    assert torch.allclose(query_attention(block.attn, x, x), block.attn(x), atol=1e-6)


def test_bert_pruned_last_block_gives_the_same_logits_and_gradients():
    torch.manual_seed(0)
    model = BertMaskedModel(BertConfig(V, LAYOUT, dim=16, depth=2, heads=2))
    x, where = tokens(), exact_where()
    pruned = model(x, where=where)
    full = model(x)[where]
    assert pruned.shape == (12, V)
    assert torch.allclose(pruned, full, atol=1e-5)
    g1 = torch.autograd.grad(pruned.logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
    g2 = torch.autograd.grad(full.logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(g1, g2, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)
    ragged = where.clone()
    ragged[0, ~where[0]] = True  # unequal counts: falls back to the full last block
    assert torch.allclose(model(x, where=ragged), model(x)[ragged], atol=1e-5)


def test_bert_head_is_tied_to_the_token_embeddings():
    model = BertMaskedModel(BertConfig(V, LAYOUT, dim=16, depth=1, heads=2))
    assert sum(p.shape == (V + 1, 16) for p in model.parameters()) == 1
    assert model.blocks[0].norm1.eps == 1e-12


def test_emd_with_no_positions_and_one_pass_is_the_plain_last_block():
    torch.manual_seed(0)
    plain = MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=2, heads=2))
    emd = EMDMaskedTokenModel(EMDConfig(V, LAYOUT, dim=16, depth=2, heads=2, emd_layers=1))
    emd.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.embed.pos.zero_()
        emd.embed.pos.zero_()
    x = tokens()
    assert torch.allclose(emd(x), plain(x), atol=1e-5)


def test_emd_at_hidden_positions_equals_full_then_gather():
    torch.manual_seed(0)
    emd = EMDMaskedTokenModel(EMDConfig(V, LAYOUT, dim=16, depth=2, heads=2, emd_layers=2))
    x = tokens()
    where = exact_where()
    where[1, :] = True  # rows with different counts
    assert torch.allclose(emd(x, where=where), emd(x)[where], atol=1e-5)
    plain = MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=2, heads=2))
    assert sum(p.numel() for p in emd.parameters()) == sum(p.numel() for p in plain.parameters())


def test_emd_config_round_trip_and_checks():
    cfg = EMDConfig(V, LAYOUT, dim=16, depth=2, heads=2, emd_layers=3)
    assert EMDConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="emd_layers"):
        EMDConfig(V, LAYOUT, emd_layers=0)
