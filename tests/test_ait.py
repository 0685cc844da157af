"""AiT (`objectives/ait.py`, recipe `ait`): soft-token decoding is the decoder on the probability-
weighted mix of code vectors (hand-computed for two codes), equals argmax decoding exactly when the
distribution is one-hot, IoU matches hand counts, the loss is the mean cross-entropy over places, and
the recipe writes its rows and sample grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.nn import ImageTokenizer, ImageTokenizerConfig
from unmask.objectives.ait import (
    MaskTokenPrediction,
    MaskTokenPredictor,
    codebook_of,
    decode_argmax,
    decode_soft,
    mask_iou,
    soft_codes,
)
from unmask.recipes import Run
from unmask.recipes.ait import AiT

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train.steps=3", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "tokenizer.steps=3", "tokenizer.batch_size=8", "tokenizer.width=8", "tokenizer.codes=8",
        "tokenizer.code_dim=4"]


def tokenizer(quantizer: str) -> ImageTokenizer:
    torch.manual_seed(0)
    cfg = ImageTokenizerConfig(image_size=16, channels=1, width=8, quantizer=quantizer, codes=6, code_dim=3,
                               levels=(3, 2))
    tok = ImageTokenizer(cfg).eval()
    if quantizer == "vq":
        with torch.no_grad():
            tok.quantizer.codebook.normal_()
    return tok


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_soft_decoding_of_a_one_hot_distribution_is_argmax_decoding_exactly(quantizer):
    tok = tokenizer(quantizer)
    k = tok.codebook_size
    idx = torch.randint(0, k, (3, 4, 4), generator=torch.Generator().manual_seed(2))
    probs = F.one_hot(idx, k).float()
    with torch.no_grad():
        assert torch.equal(decode_soft(tok, probs), decode_argmax(tok, probs))
        assert torch.equal(decode_argmax(tok, probs), tok.decode(idx))


def test_soft_codes_are_the_convex_mix_of_two_hand_made_codes():
    book = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    expected = torch.tensor([[0.25, 1.5], [1.0, 0.0], [0.5, 1.0]])
    assert torch.equal(soft_codes(probs, book), expected)


def test_soft_decoding_feeds_the_decoder_the_mix_of_the_tokenizer_codebook():
    tok = tokenizer("vq")
    book = codebook_of(tok)
    assert torch.equal(book, tok.quantizer.codebook)
    probs = torch.zeros(1, 4, 4, 6)
    probs[..., 1], probs[..., 4] = 0.3, 0.7
    mix = (0.3 * book[1] + 0.7 * book[4]).expand(1, 4, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(decode_soft(tok, probs), tok.decode_codes(mix))
        assert not torch.allclose(decode_soft(tok, probs), decode_argmax(tok, probs))


def test_mask_iou_matches_hand_counts():
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)
    true = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 0]], [[0, 1], [0, 0]], [[1, 1], [1, 0]]], dtype=torch.bool)
    # 1 shared of 3 pixels; both empty; disjoint; 3 of 4
    torch.testing.assert_close(mask_iou(pred, true), torch.tensor([1 / 3, 1.0, 0.0, 0.75]))


def test_the_loss_is_the_mean_cross_entropy_over_every_place():
    torch.manual_seed(0)
    obj = MaskTokenPrediction(MaskTokenPredictor(3, 16, 4, 5, dim=16, depth=1, heads=2))
    g = torch.Generator().manual_seed(3)
    b = {"images": torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8),
         "tokens": torch.randint(0, 5, (2, 16), generator=g)}
    out = obj(b)
    logits = obj.predictor(b["images"])
    assert logits.shape == (2, 16, 5)
    picked = logits.log_softmax(-1).gather(-1, b["tokens"].unsqueeze(-1))
    torch.testing.assert_close(out.loss, -picked.mean())


def test_the_recipe_writes_its_rows_and_a_sample_grid(tmp_path):
    from PIL import Image

    recipe = AiT().with_overrides(TINY)
    run = Run(tmp_path / "run", progress=False)
    metrics = recipe.train(run)
    assert metrics["test_images"] == 628 and metrics["train_images"] == 3325
    for key in ("iou_soft", "iou_argmax", "iou_tokenizer", "iou_mean_mask", "soft_differs"):
        assert 0.0 <= metrics[key] <= 1.0
    report = (run.folder / "report.md").read_text()
    assert "| held-out mask IoU, soft-token decoding |" in report and "(iou_argmax) | higher |" in report
    drawn = recipe.sample(run, recipe.load(run), 3, tmp_path / "s")
    assert Image.open(drawn).size == (4 * 33 + 1, 3 * 33 + 1)  # 4 tiles of 32 px per row, 1 px apart
