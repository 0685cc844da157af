"""The MAE networks beyond images: tubelets for videos, token inputs with per-example positions."""

import pytest
import torch

from unmask.masking import RandomMask, TubeMask
from unmask.nn.mae import MAEConfig, MAEDecoder, MaskedEncoder
from unmask.nn.patch import patchify_video
from unmask.nn.visible import gather_tokens


def test_patchify_video_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 4, 8, 12, generator=g)  # B C T H W
    out = patchify_video(v, patch=4, tubelet=2)
    assert out.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
    for ti in range(2):
        for hi in range(2):
            for wi in range(3):
                block = v[:, :, 2 * ti: 2 * ti + 2, 4 * hi: 4 * hi + 4, 4 * wi: 4 * wi + 4]  # b c pt ph pw
                expect = block.permute(0, 2, 3, 4, 1).reshape(2, -1)
                assert torch.equal(out[:, (ti * 2 + hi) * 3 + wi], expect)


def test_video_config_layout_and_tube_mask_encode():
    cfg = MAEConfig(image_size=(8, 16, 16), channels=1, patch=4, tubelet=2, dim=32, depth=1, heads=2,
                    decoder_dim=16, decoder_depth=1, decoder_heads=2)
    assert cfg.grid == (4, 4, 4) and cfg.patch_dim == 32 and cfg.layout.segments[0].kind == "video"
    mask = TubeMask()(cfg.layout, 3, ratio=0.75, generator=torch.Generator().manual_seed(0))
    enc = MaskedEncoder(cfg)
    out = enc(torch.randn(3, 1, 8, 16, 16), mask)
    assert out.tokens.shape == (3, 1 + 4 * 4, 32)  # class token + 4 visible of 16 in each of 4 slices
    pred = MAEDecoder(cfg)(out)
    assert pred.shape == (3, 48, 32)


@pytest.mark.parametrize("bad", [dict(image_size=(6,), patch=2), dict(image_size=(5, 8, 8), tubelet=2),
                                 dict(image_size=(8, 8), tubelet=2)])
def test_config_rejects_inconsistent_shapes(bad):
    with pytest.raises(ValueError):
        MAEConfig(**bad)


def test_token_inputs_with_per_example_positions():
    """encode(tokens, pos=[B, L, D]) equals embedding by hand and adding each row's own positions."""
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(10,), channels=6, patch=1, dim=16, depth=1, heads=2, cls_token=False)
    embed = torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Linear(4 * 3, 16))  # groups [B, L, 4, 3]
    enc = MaskedEncoder(cfg, embed=embed).eval()
    tokens, pos = torch.randn(2, 10, 4, 3), torch.randn(2, 10, 16)
    mask = RandomMask()(cfg.layout, 2, ratio=0.6, generator=torch.Generator().manual_seed(1))
    out = enc.encode(tokens, mask, pos=pos)
    keep = out.index.ids_keep
    x = embed(gather_tokens(tokens, keep)) + gather_tokens(pos, keep)
    assert torch.allclose(out.tokens, enc.transformer(x), atol=1e-6)
    with pytest.raises(ValueError, match="MaskedEncoder.encode"):
        cfg.patchify(torch.randn(2, 10, 6))
