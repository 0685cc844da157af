"""UrFound: the image encoder never reads text nor hidden patches, the knowledge text hides an exact
count of real words, the word loss reaches the image encoder and depends on the image, and the loss
equals MAE's pixel loss plus the weighted word loss computed by hand."""

import pytest
import torch
import torch.nn.functional as F

from unmask.nn.image_text import ImageTextConfig
from unmask.nn.mae import MaskedAutoencoder
from unmask.nn.patch import patchify
from unmask.objectives.mae import MaskedAutoencoding
from unmask.objectives.urfound import UrFound, cross_attention_mask, mae_config, word_mask

CFG = ImageTextConfig(image_size=8, channels=1, patch=2, vocab_size=10, text_length=6, dim=16, depth=1, heads=2)
CONDITIONS = ("pooled", "cross")


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 1, 4])[:b]
    tokens = torch.randint(2, CFG.vocab_size, (b, CFG.text_length), generator=g)
    tokens = tokens.masked_fill(torch.arange(CFG.text_length) >= lengths.unsqueeze(1), 0)
    return {"images": torch.rand(b, 1, 8, 8, generator=g), "tokens": tokens, "lengths": lengths}


def _model(**kw):
    torch.manual_seed(0)
    kw = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "text_dim": 16, "text_depth": 1,
          "text_heads": 2, **kw}
    return UrFound(CFG, **kw)


def _visible_features(m, batch, masks):
    """The image encoder's outputs in one forward pass, caught by a hook."""
    seen = []
    hook = m.mae.model.encoder.register_forward_hook(lambda mod, i, o: seen.append(o.tokens.detach().clone()))
    try:
        out = m(batch, masks=masks)
    finally:
        hook.remove()
    return seen[0], out


def test_word_mask_hides_an_exact_count_of_real_words_never_pads():
    lengths = torch.tensor([6, 3, 1, 4, 5, 2])
    mask = word_mask(lengths, 6, 0.5, torch.Generator().manual_seed(0))
    # round(0.5 x length), half to even, at least 1: 3, round(1.5)=2, max(1, 0)=1, 2, round(2.5)=2, 1
    assert mask.sum(1).tolist() == [3, 2, 1, 2, 2, 1]
    assert not (mask & (torch.arange(6) >= lengths.unsqueeze(1))).any()
    assert word_mask(lengths, 6, 1.0).sum(1).tolist() == lengths.tolist()
    assert word_mask(lengths, 6, 0.01).sum(1).tolist() == [1] * 6
    # uniform over the real words: each of 4 words hidden about half the time
    many = word_mask(torch.full((4000,), 4), 6, 0.5, torch.Generator().manual_seed(1)).double().mean(0)
    assert torch.allclose(many[:4], torch.full((4,), 0.5, dtype=torch.float64), atol=0.03)
    assert many[4:].sum() == 0


def test_forward_hides_the_drawn_counts_and_reports_them():
    m = _model(image_ratio=0.75, text_ratio=0.5)
    b = _batch()
    image, text = m.draw_masks(b["lengths"], torch.Generator().manual_seed(0))
    assert image.sum(1).tolist() == [12] * 4  # round(0.75 x 16)
    assert text.sum(1).tolist() == [3, 2, 1, 2]
    out = m(b, masks=(image, text))
    assert out.metrics["hidden_words"] == 8 / 4


@pytest.mark.parametrize("condition", CONDITIONS)
def test_image_encoder_output_is_identical_whatever_the_text(condition):
    m = _model(condition=condition)
    b = _batch()
    masks = m.draw_masks(b["lengths"], torch.Generator().manual_seed(0))
    other = dict(b, tokens=(b["tokens"] + 3) % CFG.vocab_size)
    feats, out = _visible_features(m, b, masks)
    feats2, out2 = _visible_features(m, other, masks)
    assert torch.equal(feats, feats2)  # bit-identical: the encoder never reads words
    assert torch.equal(out.metrics["image"], out2.metrics["image"])
    assert not torch.equal(out.metrics["text"], out2.metrics["text"])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_hidden_patches_never_enter_the_encoder_nor_the_word_predictions(condition):
    m = _model(condition=condition)
    b = _batch()
    masks = m.draw_masks(b["lengths"], torch.Generator().manual_seed(3))
    hidden = masks[0].view(4, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)  # patch 2 -> pixels
    noisy = dict(b, images=torch.where(hidden, torch.rand_like(b["images"]), b["images"]))
    feats, out = _visible_features(m, b, masks)
    feats2, out2 = _visible_features(m, noisy, masks)
    assert torch.equal(feats, feats2)
    assert torch.equal(out.metrics["text"], out2.metrics["text"])  # words read visible patches only
    shifted = dict(b, images=torch.where(hidden, b["images"], 1.0 - b["images"]))  # visible pixels change
    feats3, out3 = _visible_features(m, shifted, masks)
    assert not torch.allclose(feats, feats3)
    assert not torch.equal(out.metrics["text"], out3.metrics["text"])  # the words depend on the image


def _grads(m, batch, masks):
    m.zero_grad()
    m(batch, masks=masks).loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_word_loss_sends_gradient_into_the_image_encoder_and_not_the_pixel_decoder(condition):
    m = _model(condition=condition)
    b = _batch()
    masks = m.draw_masks(b["lengths"], torch.Generator().manual_seed(0))
    m.text_weight = 0.0
    pixels_only = _grads(m, b, masks)
    m.text_weight = 1.0
    both = _grads(m, b, masks)
    encoder = [n for n in both if n.startswith("mae.model.encoder.")]
    assert encoder and all(not torch.allclose(both[n], pixels_only[n]) for n in encoder if "blocks.0" in n or
                           "embed" in n)  # the knowledge text guides the image features
    decoder = [n for n in both if n.startswith("mae.model.decoder.")]
    assert decoder and all(torch.equal(both[n], pixels_only[n]) for n in decoder)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_loss_equals_its_formula_by_hand(condition):
    m = _model(text_weight=0.5, norm_pix=True, condition=condition)
    b = _batch()
    image_mask, text_mask = m.draw_masks(b["lengths"], torch.Generator().manual_seed(2))
    out = m(b, masks=(image_mask, text_mask))
    enc = m.mae.model.encoder(b["images"], image_mask)
    pixels = m.mae.model.decoder(enc)
    patches = patchify(b["images"], 2)
    pix_errors = []
    for r in range(4):
        for k, j in enumerate(image_mask[r].nonzero().flatten().tolist()):
            p = patches[r, j]
            target = (p - p.mean()) / (p.var(unbiased=True) + 1e-6) ** 0.5
            pix_errors.append(((pixels[r, k] - target) ** 2).mean())
    # word logits at every place, read by hand (pooled: the mean image vector added to every word;
    # cross: [image tokens; words] with the attention rule written out)
    dec = m.text_decoder
    shown = b["tokens"].masked_fill(text_mask, CFG.vocab_size)
    words, image = dec.word(shown) + dec.pos, dec.image(enc.tokens)  # [B, T, d], [B, K, d]
    real = torch.arange(6) < b["lengths"].unsqueeze(1)
    if condition == "pooled":
        logits = dec.head(dec.transformer(words + image.mean(1, keepdim=True), real[:, None, None, :]))
    else:
        k = image.shape[1]
        allowed = torch.zeros(4, k + 6, k + 6, dtype=torch.bool)
        allowed[:, :k, :k] = True
        allowed[:, k:, :k] = True
        allowed[:, k:, k:] = real[:, None, :]
        h = dec.transformer(torch.cat([image, words], 1), allowed[:, None])
        logits = dec.head(h[:, k:])  # [B, T, V]
    word_losses = [-F.log_softmax(logits[r, j], -1)[b["tokens"][r, j]] for r, j in text_mask.nonzero().tolist()]
    expected = torch.stack(pix_errors).mean() + 0.5 * torch.stack(word_losses).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(out.metrics["image"], torch.stack(pix_errors).mean(), atol=1e-6)


def test_cross_attention_mask_image_rows_never_read_words():
    real = torch.tensor([[True, True, False], [True, False, False]])
    allowed = cross_attention_mask(2, real)  # [2, 5, 5]
    assert not allowed[:, :2, 2:].any()  # image rows never read a word
    assert allowed[:, :, :2].all()  # everyone reads the image
    assert torch.equal(allowed[:, 2:, 2:], real[:, None, :].expand(2, 3, 3))  # words read real words only


def test_pads_are_never_read_by_the_words():
    for condition in CONDITIONS:
        m = _model(condition=condition)
        b = _batch()
        masks = m.draw_masks(b["lengths"], torch.Generator().manual_seed(0))
        pads = torch.arange(6) >= b["lengths"].unsqueeze(1)
        other = dict(b, tokens=b["tokens"].masked_fill(pads, 7))
        assert torch.equal(m(b, masks=masks).metrics["text"], m(other, masks=masks).metrics["text"])


def test_image_networks_start_as_a_plain_mae_and_features_read_the_image_alone():
    m = _model()
    torch.manual_seed(0)
    mae = MaskedAutoencoding(MaskedAutoencoder(mae_config(CFG, 16, 1, 2)))
    for (n1, p1), (n2, p2) in zip(m.mae.state_dict().items(), mae.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.rand(2, 1, 8, 8)
    assert m.image_features(x).shape == (2, 16, 16)
    assert torch.equal(m.image_features(x), m.mae.model.features(x))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="image_ratio"):
        _model(image_ratio=1.0)
    with pytest.raises(ValueError, match="text_ratio"):
        _model(text_ratio=0.0)
    with pytest.raises(ValueError, match="text_weight"):
        _model(text_weight=-1.0)
    with pytest.raises(ValueError, match="condition"):
        _model(condition="concat")
    m, b = _model(), _batch()
    with pytest.raises(ValueError, match="lengths"):
        m(dict(b, lengths=torch.tensor([6, 3, 0, 4])))  # a caption with no word
    with pytest.raises(ValueError, match="lengths"):
        m(dict(b, lengths=torch.tensor([7, 3, 1, 4])))
    with pytest.raises(ValueError, match="tokens"):
        m(dict(b, tokens=b["tokens"][:, :5]))
    with pytest.raises(ValueError, match="images"):
        m(dict(b, images=torch.rand(4, 3, 8, 8)))
