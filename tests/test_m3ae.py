"""M3AE: exact hidden counts per modality at each modality's ratio, hidden tokens never reach the
encoder, each decoder reads its own modality only, and the loss equals its formula by hand."""

import pytest
import torch
import torch.nn.functional as F

from unmask.nn.image_text import ImageTextConfig
from unmask.nn.patch import patchify
from unmask.objectives.m3ae import M3AE

CFG = ImageTextConfig(image_size=8, channels=1, patch=2, vocab_size=10, text_length=6, dim=16, depth=1, heads=2)


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 1, 4])[:b]
    tokens = torch.randint(2, CFG.vocab_size, (b, CFG.text_length), generator=g)
    tokens = tokens.masked_fill(torch.arange(CFG.text_length) >= lengths.unsqueeze(1), 0)
    return {"images": torch.rand(b, 1, 8, 8, generator=g), "tokens": tokens, "lengths": lengths}


def _model(**kw):
    torch.manual_seed(0)
    return M3AE(CFG, decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw)


def test_exact_counts_per_modality():
    m = _model(image_ratio=0.75, text_ratio=0.5)
    mask = m.draw_mask(5, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 16 + 6)
    assert mask[:, :16].sum(1).tolist() == [12] * 5  # round(0.75 * 16)
    assert mask[:, 16:].sum(1).tolist() == [3] * 5  # round(0.5 * 6)
    m = _model(image_ratio=0.5, text_ratio=0.0)
    mask = m.draw_mask(3, torch.Generator().manual_seed(1))
    assert mask[:, :16].sum(1).tolist() == [8] * 3 and not mask[:, 16:].any()


def test_hidden_tokens_never_reach_the_encoder():
    m = _model()
    b = _batch()
    mask = m.draw_mask(4, torch.Generator().manual_seed(0))
    patches = patchify(b["images"], 2)
    img, txt, _, _ = m.encode(patches, b["tokens"], b["lengths"], mask)
    hidden_pixels = mask[:, :16].unsqueeze(-1)
    noisy = torch.where(hidden_pixels, torch.rand_like(patches), patches)
    hidden_words = mask[:, 16:]
    other = torch.where(hidden_words, (b["tokens"] + 1) % CFG.vocab_size, b["tokens"])
    img2, txt2, _, _ = m.encode(noisy, other, b["lengths"], mask)
    assert torch.allclose(img, img2) and torch.allclose(txt, txt2)
    visible_change = torch.where(hidden_pixels, patches, patches + 1)
    img3, _, _, _ = m.encode(visible_change, b["tokens"], b["lengths"], mask)
    assert not torch.allclose(img, img3)


def test_each_decoder_reads_its_own_modality_only():
    m = _model()
    b = _batch()
    mask = m.draw_mask(4, torch.Generator().manual_seed(0))
    base = m(b, mask=mask).metrics
    kt = int((~mask[0, 16:]).sum())
    encoder = m.encoder.forward

    def text_outputs_scrambled(x, attn_mask=None):
        out = encoder(x, attn_mask)
        return torch.cat([out[:, :-kt], torch.randn_like(out[:, -kt:])], dim=1)

    m.encoder.forward = text_outputs_scrambled
    changed = m(b, mask=mask).metrics
    assert torch.equal(base["image"], changed["image"])  # the image decoder never read the text outputs
    assert not torch.equal(base["text"], changed["text"])


def test_loss_equals_its_formula_by_hand():
    m = _model(text_weight=0.5, norm_pix=True)
    b = _batch()
    mask = m.draw_mask(4, torch.Generator().manual_seed(2))
    out = m(b, mask=mask)
    patches = patchify(b["images"], 2)
    img, txt, ii, ti = m.encode(patches, b["tokens"], b["lengths"], mask)
    pixels, logits = m.image_decoder(img, ii), m.text_decoder(txt, ti)
    pix_errors, word_losses = [], []
    for r in range(4):
        for k, j in enumerate(mask[r, :16].nonzero().flatten().tolist()):
            p = patches[r, j]
            target = (p - p.mean()) / (p.var(unbiased=True) + 1e-6) ** 0.5
            pix_errors.append(((pixels[r, k] - target) ** 2).mean())
        for k, j in enumerate(mask[r, 16:].nonzero().flatten().tolist()):
            if j < b["lengths"][r]:  # a real word, not a pad
                word_losses.append(-F.log_softmax(logits[r, k], -1)[b["tokens"][r, j]])
    expected = torch.stack(pix_errors).mean() + 0.5 * torch.stack(word_losses).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.metrics["hidden_words"] == len(word_losses) / 4


def test_image_features_read_every_patch_and_no_text():
    m = _model()
    x = torch.rand(2, 1, 8, 8)
    assert m.image_features(x).shape == (2, 16, 16)


def test_bad_ratios_are_errors():
    with pytest.raises(ValueError, match="image_ratio"):
        _model(image_ratio=1.0)
    with pytest.raises(ValueError, match="text_ratio"):
        _model(text_ratio=1.5)
