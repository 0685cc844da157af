"""ETT (`objectives/ett.py`, recipe `ett`): the downstream loss reaches the tokenizer's encoder and
codebook through the code embeddings (each used code's gradient is the sum of the gradients at the
places that chose it), never in the frozen baseline; the joint loss is the cross-entropy plus w times
the tokenizer's own loss; the recipe starts both models from the trained tokenizer and writes its rows."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unmask.eval.tokenizer import measure_tokenizer
from unmask.nn import ImageTokenizer, ImageTokenizerConfig
from unmask.objectives import TokenizerTraining
from unmask.objectives.ett import TokenClassifier, TokenizerTuning, ett_codes
from unmask.recipes import Run
from unmask.recipes.ett import ETT, FROZEN
from unmask.recipes.image_tokens import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train.steps=3", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "tokenizer.steps=3", "tokenizer.batch_size=8", "tokenizer.width=8", "tokenizer.codes=8",
        "tokenizer.code_dim=4"]


def tuning(tune: bool, recon_weight: float = 0.0, classes: int = 5) -> TokenizerTuning:
    torch.manual_seed(0)
    # restart_after=0: no dead-code restarts, so the codebook changes only by gradients
    tok = ImageTokenizer(ImageTokenizerConfig(image_size=16, channels=1, width=8, codes=6, code_dim=4,
                                              restart_after=0))
    return TokenizerTuning(tok, TokenClassifier(4, 16, classes, dim=16, depth=1, heads=2), recon_weight, tune)


def batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8),
            "labels": torch.randint(0, 5, (n,), generator=g)}


def test_the_classifier_loss_reaches_encoder_and_each_used_code_as_the_sum_of_its_places():
    obj = tuning(tune=True, recon_weight=0.0).train()
    b = batch()
    codes, q, _ = ett_codes(obj.tokenizer, b["images"])
    assert torch.equal(codes, obj.tokenizer.embed(q.indices))  # the value is the code vector exactly
    codes.retain_grad()
    F.cross_entropy(obj.classifier(codes), b["labels"]).backward()
    book = obj.tokenizer.quantizer.codebook
    expected = torch.zeros_like(book).index_add_(0, q.indices.flatten(), codes.grad.reshape(-1, 4))
    torch.testing.assert_close(book.grad, expected, rtol=1e-5, atol=1e-7)
    used = torch.zeros(6, dtype=torch.bool)
    used[q.indices.flatten()] = True
    assert book.grad[used].abs().sum(1).gt(0).all() and book.grad[~used].eq(0).all()
    enc = [p.grad for p in obj.tokenizer.encoder.parameters()]
    assert all(g is not None for g in enc) and sum(g.abs().sum() for g in enc) > 0
    assert all(p.grad is None for p in obj.tokenizer.decoder.parameters())  # w = 0: no reconstruction term


def test_the_objective_with_w_zero_sends_the_same_gradient_as_the_hand_built_loss():
    obj = tuning(tune=True, recon_weight=0.0).train()
    obj(batch()).loss.backward()
    got = obj.tokenizer.quantizer.codebook.grad.clone()
    obj.zero_grad(set_to_none=True)
    codes, _, _ = ett_codes(obj.tokenizer, batch()["images"])
    F.cross_entropy(obj.classifier(codes), batch()["labels"]).backward()
    torch.testing.assert_close(got, obj.tokenizer.quantizer.codebook.grad)


def test_the_frozen_baseline_sends_no_gradient_to_the_tokenizer_and_stays_in_eval_mode():
    obj = tuning(tune=False, recon_weight=1.0)
    obj.train()
    assert not obj.tokenizer.training and obj.classifier.training
    out = obj(batch())
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in obj.tokenizer.parameters())
    assert all(p.grad is not None for p in obj.classifier.parameters())
    torch.testing.assert_close(out.loss, out.metrics["ce"])  # no reconstruction term is trained


def test_the_ett_loss_is_cross_entropy_plus_w_times_the_tokenizer_loss():
    obj = tuning(tune=True, recon_weight=0.5).train()
    b = batch()
    out = obj(b)
    recon = TokenizerTraining(obj.tokenizer)({"images": b["images"]}).loss
    logits = obj.classifier(obj.tokenizer.embed(obj.tokenizer.encode(b["images"])))
    ce = F.cross_entropy(logits, b["labels"])
    torch.testing.assert_close(out.metrics["ce"], ce.detach())
    torch.testing.assert_close(out.loss, ce + 0.5 * recon)


def test_the_recipe_starts_both_from_the_trained_tokenizer_and_writes_its_rows(tmp_path):
    recipe = ETT().with_overrides(TINY)
    run = Run(tmp_path / "run", progress=False)
    metrics = recipe.train(run)
    assert {"accuracy_ett", "accuracy_frozen", "mse_ett", "mse_frozen"} <= metrics.keys()
    assert metrics["test_images"] == 207 and metrics["classes"] == 111
    start = load_tokenizer(recipe, run)
    frozen = recipe.load(run.sub(FROZEN), FROZEN).tokenizer
    ett = recipe.load(run).tokenizer
    same = [torch.equal(a, b) for a, b in zip(start.state_dict().values(), frozen.state_dict().values(), strict=True)]
    moved = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), ett.state_dict().values(), strict=True)]
    assert all(same) and any(moved)
    test = recipe.glyphs("test").images
    assert metrics["mse_frozen"] == pytest.approx(measure_tokenizer(start, test)["mse"], rel=1e-6)
    report = (run.folder / "report.md").read_text()
    assert "| held-out accuracy, ETT |" in report and "(accuracy_frozen) | higher |" in report
    assert json.loads((run.folder / "metrics.json").read_text()) == metrics
    drawn = recipe.sample(run, recipe.load(run), 3, tmp_path / "s")
    assert drawn.stat().st_size > 0
