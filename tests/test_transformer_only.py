"""`Transformer(x, only=ids)` (or a slice of positions): the last block at a few positions gives exactly
those rows of the full output, and the networks that use it (MAE decoder, masked token model) return
what the full pass would."""

import pytest
import torch

from unmask.layout import Layout
from unmask.masking import RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.transformer import Transformer
from unmask.nn.visible import gather_tokens


@pytest.mark.parametrize("mask_kind", [None, "shared", "per-row"])
def test_only_equals_rows_of_the_full_pass(mask_kind):
    torch.manual_seed(0)
    t = Transformer(32, 3, 4).double()
    x = torch.randn(3, 10, 32, dtype=torch.double)
    ids = torch.stack([torch.randperm(10)[:4] for _ in range(3)])
    mask = None
    if mask_kind:
        mask = torch.rand(3, 1, 10, 10) > 0.4
        mask[..., torch.arange(10), torch.arange(10)] = True
        mask = mask[0, 0] if mask_kind == "shared" else mask
    assert torch.allclose(t(x, mask, only=ids), gather_tokens(t(x, mask), ids), atol=1e-12)
    assert torch.allclose(t(x, mask, only=slice(6, None)), t(x, mask)[:, 6:], atol=1e-12)


def test_only_counts_less_work():
    """The pruned pass does fewer FLOPs: the last block's queries and MLP run at 4 of 64 positions."""
    from torch.utils.flop_counter import FlopCounterMode

    t = Transformer(64, 2, 4)
    x, ids = torch.randn(2, 64, 64), torch.arange(4).expand(2, 4)
    flops = []
    for kw in ({}, {"only": ids}):
        with FlopCounterMode(display=False) as c:
            t(x, **kw)
        flops.append(c.get_total_flops())
    assert flops[1] < 0.75 * flops[0]


def test_mae_decoder_hidden_predictions_equal_the_full_decode():
    torch.manual_seed(0)
    model = MaskedAutoencoder(MAEConfig(image_size=(8, 8), patch=2, dim=32, depth=1, heads=2, decoder_dim=16,
                                        decoder_depth=2, decoder_heads=2)).double()
    images = torch.rand(4, 1, 8, 8, dtype=torch.double)
    mask = RandomMask()(model.layout, 4, ratio=0.75, generator=torch.Generator().manual_seed(1))
    out = model(images, mask)
    every = model.decoder(out.encoded, every=True)
    assert torch.allclose(out.pred, gather_tokens(every, out.encoded.index.ids_hidden), atol=1e-12)


def test_masked_token_model_logits_at_hidden_places_equal_the_full_pass():
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(50, Layout.seq(12), dim=32, depth=2, heads=4)).double()
    tokens = torch.randint(0, 50, (3, 12))
    same = RandomMask()(Layout.seq(12), 3, ratio=0.25, generator=torch.Generator().manual_seed(0))
    ragged = same.clone()
    ragged[0, ~same[0]] = True  # row 0 hides every place: unequal counts take the plain path
    for where in (same, ragged):
        assert torch.allclose(model(tokens, where), model(tokens)[where], atol=1e-12)
