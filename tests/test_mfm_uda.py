"""Masked Feature Modeling for domain adaptation (objectives/mfm_uda.py) and the digit domain shift
(data/domain_shift.py): exact mask counts, where the MFM loss reaches the features, the mean
teacher's update and pseudo-label weights by hand, and that training never reads a target label."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unmask.data import domain_shift as ds
from unmask.data.image_sets import glyph_fonts
from unmask.nn.mae import MAEConfig, MaskedEncoder
from unmask.objectives.mfm_uda import MaskedFeatureUDA, Rebuilder, TokenClassifier
from unmask.seeding import seeded
from unmask.train.trainer import TrainConfig, fit

DIM, CLASSES = 16, 10


def build(seed: int = 0, **kw) -> MaskedFeatureUDA:
    cfg = MAEConfig(image_size=(16, 16), channels=1, patch=4, dim=DIM, depth=1, heads=2, cls_token=False)
    with seeded(seed):
        encoder, head = MaskedEncoder(cfg), TokenClassifier(DIM, CLASSES)
        rebuilder = Rebuilder(DIM, cfg.grid, width=DIM, depth=1, heads=2)
    kw.setdefault("threshold", 0.0)  # every pseudo-label counts, so the target terms are never zero
    return MaskedFeatureUDA(encoder, head, rebuilder, **kw)


def batch(b: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"source": torch.rand(b, 1, 16, 16, generator=g), "labels": torch.randint(CLASSES, (b,), generator=g),
            "target": torch.rand(b, 1, 16, 16, generator=g)}


class SpyRebuilder(Rebuilder):
    def forward(self, features, mask):
        self.seen = mask
        return super().forward(features, mask)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, tokens):
        return self.logits


# masks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, hidden", [(0.4, 6), (0.75, 12), (0.0, 0), (1.0, 16)])
def test_mask_count_is_exact_and_follows_the_generator(ratio, hidden):
    obj = build(ratio=ratio)
    spy = SpyRebuilder(DIM, (4, 4), width=DIM, depth=1, heads=2)
    obj.rebuilder = spy
    obj(batch(), generator=torch.Generator().manual_seed(3))
    first = spy.seen
    assert first.dtype == torch.bool and first.shape == (8, 16)
    assert (first.sum(1) == hidden).all()  # round(ratio * 16) in every row
    obj(batch(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(spy.seen, first)
    if 0 < hidden < 16:
        obj(batch(), generator=torch.Generator().manual_seed(4))
        assert not torch.equal(spy.seen, first)


# where the MFM loss goes -------------------------------------------------------------------------
def test_mfm_loss_reaches_hidden_features_only_through_the_rebuilder():
    """Hidden features are replaced by the mask token before the Rebuilder reads them, and the visible
    ones pass unchanged: the gradient of the MFM loss is exactly zero at every hidden feature and
    non-zero at the visible ones, and the Rebuilder's own weights get a gradient."""
    obj = build()
    feats = torch.randn(4, 16, DIM, requires_grad=True)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, [0, 5, 6, 11]] = True
    rebuilt = obj.rebuilder(feats, mask)
    assert torch.equal(rebuilt[~mask], feats[~mask])  # visible tokens keep the encoder's features
    assert not torch.allclose(rebuilt[mask], feats[mask])
    loss = F.cross_entropy(obj.head(rebuilt), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.equal(feats.grad[mask], torch.zeros_like(feats.grad[mask]))
    assert (feats.grad[~mask].abs().sum(-1) > 0).all()
    assert obj.rebuilder.out.weight.grad.abs().sum() > 0 and obj.rebuilder.mask_token.grad.abs().sum() > 0


def test_no_hidden_tokens_makes_the_mfm_term_the_self_training_term():
    """ratio 0: the rebuilt map is the feature map, so the head gives the same CE (a rebuild wired to
    every token, or an inverted mask, breaks this)."""
    out = build(ratio=0.0)(batch(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.metrics["mfm_ce"], out.metrics["target_ce"])
    assert not torch.equal(build(ratio=0.4)(batch(), generator=torch.Generator().manual_seed(0)).metrics["mfm_ce"],
                           out.metrics["target_ce"])


def test_everything_hidden_makes_the_rebuilt_map_independent_of_the_features():
    obj = build()
    mask = torch.ones(3, 16, dtype=torch.bool)
    a = obj.head(obj.rebuilder(torch.randn(3, 16, DIM), mask))
    b = obj.head(obj.rebuilder(torch.randn(3, 16, DIM), mask))
    assert torch.allclose(a, b)
    assert torch.allclose(a[0], a[1])


def test_mfm_trains_the_task_head_itself_and_inference_skips_the_rebuilder():
    b, grads = batch(), []
    for mfm in (False, True):  # the same weights (seeded), with and without the MFM term
        obj = build(self_training=False, mfm=mfm)
        obj(b, generator=torch.Generator().manual_seed(0)).loss.backward()
        grads.append(obj.head.linear.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])  # the rebuilt features are classified by the task head
    images = torch.rand(5, 1, 16, 16)
    before = obj.predict(images)
    with torch.no_grad():
        for p in obj.rebuilder.parameters():
            p.add_(1.0)
    assert torch.equal(obj.predict(images), before)


def test_source_only_and_self_training_options():
    b = batch()
    source_only = build(mfm=False, self_training=False)
    out = source_only(b)
    expected = F.cross_entropy(source_only.predict(b["source"]), b["labels"])
    assert torch.allclose(out.loss, expected) and "target_ce" not in out.metrics and source_only.rebuilder is None
    st = build(mfm=False)(b)
    assert "target_ce" in st.metrics and "mfm_ce" not in st.metrics


# the mean teacher --------------------------------------------------------------------------------
def test_ema_teacher_update_equals_the_formula_by_hand():
    obj = build(momentum=0.9)
    student = [p for p in (*obj.encoder.parameters(), *obj.head.parameters())]
    teacher = [p for p in (*obj.teacher_encoder.parameters(), *obj.teacher_head.parameters())]
    with torch.no_grad():
        for p in student:
            p.fill_(2.0)
    obj.begin_step(0)  # step 0: a copy
    assert all(torch.equal(t, torch.full_like(t, 2.0)) for t in teacher)
    with torch.no_grad():
        for p in student:
            p.fill_(8.0)
    obj.begin_step(3)  # a = min(1 - 1/4, 0.9) = 0.75: 0.75 * 2 + 0.25 * 8 = 3.5
    assert all(torch.allclose(t, torch.full_like(t, 3.5)) for t in teacher)
    obj.begin_step(1000)  # a = 0.9: 0.9 * 3.5 + 0.1 * 8 = 3.95
    assert all(torch.allclose(t, torch.full_like(t, 3.95)) for t in teacher)
    assert not any(t.requires_grad for t in teacher)


def test_pseudo_labels_and_weights_by_hand():
    logits = torch.tensor([[9.0, 0.0, 0.0], [1.0, 1.2, 0.0], [0.0, 0.0, 9.0], [0.0, 0.5, 0.0]])
    share = build(threshold=0.9)
    share.teacher_head = FixedLogits(logits)
    labels, w = share.pseudo_labels(torch.rand(4, 1, 16, 16))
    assert labels.tolist() == [0, 1, 2, 1]
    assert torch.allclose(w, torch.full((4,), 0.5))  # DACS: 2 of 4 confident, one weight for all
    masked = build(threshold=0.9, weighting="mask")
    masked.teacher_head = FixedLogits(logits)
    assert masked.pseudo_labels(torch.rand(4, 1, 16, 16))[1].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_loss_equals_the_three_terms_by_hand():
    obj = build(threshold=0.5, mfm_weight=0.7)
    b = batch()
    out = obj(b, generator=torch.Generator().manual_seed(1))
    pseudo, w = obj.pseudo_labels(b["target"])
    feats = obj.features(b["target"])
    mask = obj.masker(obj.layout, 8, ratio=0.4, generator=torch.Generator().manual_seed(1))
    expected = (F.cross_entropy(obj.predict(b["source"]), b["labels"])
                + (w * F.cross_entropy(obj.head(feats), pseudo, reduction="none")).mean()
                + 0.7 * (w * F.cross_entropy(obj.head(obj.rebuilder(feats, mask)), pseudo, reduction="none")).mean())
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert all(v.ndim == 0 and not v.requires_grad for v in out.metrics.values())


# target labels never enter training --------------------------------------------------------------
def _train(data: dict, tmp_path, name: str) -> dict:
    obj = build()  # threshold 0: every pseudo-label weighs 1, so the target terms are live
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup=1, seed=0, log_every=1, precision="fp32")
    fit(obj, data, cfg, tmp_path / name, {"name": name}, progress=False)
    return obj.state_dict()


def test_target_labels_change_no_gradient():
    b = {**batch(b=16), "target_labels": torch.arange(16) % CLASSES}
    grads = []
    for labels in (b["target_labels"], b["target_labels"].flip(0)):
        obj = build()
        obj({**b, "target_labels": labels}, generator=torch.Generator().manual_seed(0)).loss.backward()
        grads.append([p.grad for p in obj.parameters() if p.requires_grad])
    assert all(torch.equal(x, y) for x, y in zip(*grads, strict=True))


@pytest.mark.slow
def test_permuting_target_labels_changes_nothing_in_training(tmp_path):
    b = batch(b=16)
    labels = torch.arange(16) % CLASSES
    data = {**b, "target_labels": labels}
    ref = _train(data, tmp_path, "a")
    permuted = _train({**data, "target_labels": labels.flip(0)}, tmp_path, "b")
    assert all(torch.equal(ref[k], permuted[k]) for k in ref)
    other_targets = _train({**data, "target": torch.rand(16, 1, 16, 16)}, tmp_path, "c")  # the target does count
    assert not all(torch.equal(ref[k], other_targets[k]) for k in ref)


# the domain shift --------------------------------------------------------------------------------
def test_target_train_and_test_faces_are_disjoint_and_complete():
    train = tuple(f for f in glyph_fonts() if f not in ds.TEST_FACES)
    assert set(ds.TEST_FACES) <= set(glyph_fonts()) and len(train) == len(glyph_fonts()) - len(ds.TEST_FACES)
    glyphs = ds.typeset_glyphs(ds.TEST_FACES)
    assert glyphs.images.shape == (30, 1, 16, 16) and glyphs.labels.tolist() == list(range(10)) * 3
    rows = glyphs.images[:, 0].amax(2) > 0  # [M, S]: rows holding ink
    cols = glyphs.images[:, 0].amax(1) > 0
    # each glyph's longer ink side spans the image (fill 1.0, as the handwritten digits fill theirs)
    assert ((rows.sum(1) >= 15) | (cols.sum(1) >= 15)).all()
    with pytest.raises(ValueError, match="unknown face"):
        ds.typeset_glyphs(("Comic.ttf",))


def test_renders_are_seeded_and_no_shift_is_the_identity():
    base = ds.typeset_glyphs(ds.TEST_FACES[:1])
    a = ds.render(base, 40, ds.RenderShift(), torch.Generator().manual_seed(0))
    b = ds.render(base, 40, ds.RenderShift(), torch.Generator().manual_seed(0))
    assert torch.equal(a.images, b.images) and a.images.shape == (40, 1, 16, 16)
    assert a.images.min() >= 0 and a.images.max() <= 1
    still = ds.perturb(base.images, ds.RenderShift(shift=0.0, scale=0.0, blur=0.0))
    assert torch.allclose(still, base.images, atol=1e-5)
    impulse = torch.zeros(2, 1, 16, 16)
    impulse[:, 0, 8, 8] = 1.0
    blurred = ds.gaussian_blur(impulse, torch.tensor([1.0, 0.0]))
    k = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    k = k / k.sum()  # the 7-tap kernel of sigma 1, by hand
    assert torch.allclose(blurred[0, 0, 5:12, 5:12], k[:, None] * k[None, :], atol=1e-7)
    assert math.isclose(blurred[0].sum().item(), 1.0, rel_tol=1e-6)
    assert torch.allclose(blurred[1], impulse[1])  # sigma 0 leaves the image as it is


def test_source_domain_is_the_digits_split():
    train, test = ds.source_digits("train"), ds.source_digits("test")
    assert train.images.shape == (1437, 1, 16, 16) and test.images.shape == (360, 1, 16, 16)
    assert train.images.max() <= 1 and math.isclose(train.images.max().item(), 1.0)


# bad input ---------------------------------------------------------------------------------------
def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="ratio"):
        build(ratio=1.5)
    with pytest.raises(ValueError, match="weighting"):
        build(weighting="soft")
    with pytest.raises(ValueError, match="momentum"):
        build(momentum=1.0)
    cfg = MAEConfig(image_size=(16, 16), patch=4, dim=DIM, depth=1, heads=2, cls_token=True)
    with pytest.raises(ValueError, match="cls_token"):
        MaskedFeatureUDA(MaskedEncoder(cfg), TokenClassifier(DIM, CLASSES), Rebuilder(DIM, (4, 4), width=DIM))
    with pytest.raises(ValueError, match="Rebuilder"):
        MaskedFeatureUDA(MaskedEncoder(MAEConfig(image_size=(16, 16), patch=4, dim=DIM, depth=1, heads=2,
                                                 cls_token=False)), TokenClassifier(DIM, CLASSES), None)
    with pytest.raises(ValueError, match="shift"):
        ds.RenderShift(shift=-0.1)


# the recipe (built by class; its registry line is added with the recipe table) -------------------
def test_uda_digits_recipe_trains_evaluates_and_reloads(tmp_path):
    from unmask.recipes.run import Run
    from unmask.recipes.uda_digits import UDADigits

    tiny = ["train.steps=2", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2",
            "train.batch_size=16", "data.target_test=20"]
    recipe = UDADigits().with_overrides(tiny)
    run = Run(tmp_path / "uda", progress=False)
    metrics = recipe.train(run)
    assert set(metrics) == {"accuracy_target_test", "accuracy_target_train", "accuracy_source_test"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert recipe.measure(run, recipe.load(run)) == metrics  # the checkpoint holds the evaluated weights
    baseline = UDADigits().with_overrides([*tiny, "objective.mfm=false"]).objective()
    assert baseline.rebuilder is None and not baseline.mfm and baseline.self_training
    with pytest.raises(Exception, match="weighting"):
        UDADigits().with_overrides(["objective.weighting=soft"])
