"""The MAE family's objectives: each variant's defining property on tiny networks."""

import math

import pytest
import torch

from unmask.masking import RandomMask
from unmask.nn.mae import MAEConfig, MaskedAutoencoder, MaskedEncoder
from unmask.nn.patch import patchify
from unmask.objectives.dmjd import DisjointMaskingJointDistillation
from unmask.objectives.hpm import HardPatchMining, relative_loss
from unmask.objectives.lut import UnmaskedTokenLearning, byol_loss
from unmask.objectives.maskalign import MaskAlign
from unmask.objectives.mfm import MaskedFrequencyModeling, frequency_loss, remove_frequencies
from unmask.objectives.mimic import MimicBeforeReconstruct, teacher_tokens
from unmask.objectives.mto import MaskedTokenOptimization
from unmask.objectives.selective_mae import SelectiveMaskedAutoencoding, gradient_energy
from unmask.objectives.umd import UnifiedMaskedDiffusion, cosine_alpha_bar

CFG = dict(image_size=(8, 8), channels=1, patch=2, dim=16, depth=2, heads=2, decoder_dim=8, decoder_depth=1,
           decoder_heads=2, cls_token=False)


def cfg(**kw):
    return MAEConfig(**{**CFG, **kw})


def model(**kw):
    torch.manual_seed(0)
    return MaskedAutoencoder(cfg(**kw))


def images(b=6, seed=0):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


class Recorder:
    """Wraps a masker and keeps every mask it draws."""

    def __init__(self, masker):
        self.masker, self.masks = masker, []

    def eligible(self, layout):
        return self.masker.eligible(layout)

    def __call__(self, layout, b, **kw):
        mask = self.masker(layout, b, **kw)
        self.masks.append(mask)
        return mask


# HPM (P3) ---------------------------------------------------------------------------------------
def test_relative_loss_values():
    errors = torch.tensor([[0.1, 0.5, 0.9, 0.3]])
    assert relative_loss(torch.zeros(1, 4), errors).item() == pytest.approx(math.log(2))  # no preference
    ordered = errors * 1000  # same order, huge margins
    assert relative_loss(ordered, errors).item() < 1e-6
    assert relative_loss(-ordered, errors).item() > 50  # wrong order is punished
    pred = torch.randn(3, 4)
    e = torch.rand(3, 4)
    assert relative_loss(pred + 7.0, e).item() == pytest.approx(relative_loss(pred, e).item(), rel=1e-5)
    ties = torch.ones(2, 5)  # no pair with different errors: nothing to rank
    assert relative_loss(torch.randn(2, 5), ties).item() == 0.0


def test_hpm_share_grows_easy_to_hard_and_the_predictor_learns():
    obj = HardPatchMining(model(), steps=2)
    shares = []
    for _ in range(3):
        loss, metrics = obj({"images": images()}, generator=gen())
        shares.append(metrics["hard_share"])
    assert shares == [0.0, 0.25, 0.5]
    loss.backward()
    assert obj.loss_predictor.head.weight.grad.abs().sum() > 0
    obj.eval()
    obj({"images": images()}, generator=gen())
    assert int(obj.step) == 3  # evaluation does not advance the schedule


def test_hpm_hides_the_patches_it_predicts_hardest():
    obj = HardPatchMining(model(), steps=1)
    x = images()
    scores = obj.predicted_losses(x)
    top = scores.topk(6, dim=1).indices  # int(12 * 0.5) predicted hardest of 16
    obj.step.fill_(1)  # end of training: half of the hidden patches by predicted loss
    assert obj.hard_mask(x, gen()).gather(1, top).all()
    obj.step.fill_(0)  # start: random masks, the hardest patches hidden no more often than others
    hits = torch.stack([obj.hard_mask(x, gen(s)).gather(1, top).float().mean() for s in range(20)])
    assert 0.6 < hits.mean().item() < 0.9  # about 12 / 16


# LUT (P1) ---------------------------------------------------------------------------------------
def test_byol_loss_range():
    q = torch.randn(4, 8)
    assert byol_loss(q, 3 * q).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(q, -q).item() == pytest.approx(4.0, abs=1e-6)


def test_lut_teacher_is_an_ema_of_the_student_and_gets_no_gradient():
    obj = UnmaskedTokenLearning(model(), momentum=0.9)
    student = obj.model.encoder.embed.proj.weight
    with torch.no_grad():
        student.add_(1.0)  # the student moved away from its copy
    before = obj.teacher_encoder.embed.proj.weight.clone()
    loss, metrics = obj({"images": images()}, generator=gen())
    after = obj.teacher_encoder.embed.proj.weight
    assert torch.allclose(after, 0.9 * before + 0.1 * student.detach(), atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in obj.teacher_encoder.parameters())
    assert obj.predictor[0].weight.grad is not None
    with pytest.raises(ValueError, match="0.5"):
        UnmaskedTokenLearning(model(), ratio=0.4)


# MR-MAE (P5) and MaskAlign (P33) ----------------------------------------------------------------
def test_mimic_loss_reads_the_teacher_only_at_visible_places():
    obj = MimicBeforeReconstruct(model(), MaskedEncoder(cfg()))
    mask = RandomMask()(obj.layout, 6, ratio=0.75, generator=gen())
    index_keep = (~mask).nonzero()[:, 1].view(6, -1)
    visible = torch.randn(6, 4, 16)
    target = torch.randn(6, 16, 16)
    moved = target + mask[..., None] * 5.0  # teacher features changed only at hidden places
    assert obj.mimic_loss(visible, target, index_keep).item() == obj.mimic_loss(visible, moved, index_keep).item()
    loss, _ = obj({"images": images()}, generator=gen())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in obj.teacher.parameters())


def test_maskalign_has_no_decoder_and_aligns_visible_places_only():
    teacher = MaskedEncoder(cfg(depth=3))
    obj = MaskAlign(cfg(), teacher)
    assert not any("decoder" in n for n, _ in obj.named_parameters())
    # depth 2 student, depth 3 teacher: identity on the last two teacher layers, plus 0.01
    assert torch.allclose(obj.fusion, torch.tensor([[0.01, 0.01], [1.01, 0.01], [0.01, 1.01]]))
    mask = RandomMask()(obj.layout, 6, ratio=0.75, generator=gen())
    keep = (~mask).nonzero()[:, 1].view(6, -1)
    student = [torch.randn(6, 4, 16) for _ in range(2)]
    targets = teacher_tokens(teacher, images())
    layers = teacher_tokens(teacher, images(), layers=True)
    assert len(layers) == 3 and torch.allclose(layers[-1].mean(-1), torch.zeros(6, 16), atol=1e-5)
    moved = [t + mask[..., None] * 3.0 for t in layers]
    assert obj.alignment_loss(student, layers, keep).item() == obj.alignment_loss(student, moved, keep).item()
    assert targets.shape == (6, 16, 16)
    loss, _ = obj({"images": images()}, generator=gen())
    loss.backward()
    assert obj.fusion.grad is not None


# DMJD (P72) -------------------------------------------------------------------------------------
def test_dmjd_views_cover_every_patch_and_visible_loss_reads_visible_targets():
    obj = DisjointMaskingJointDistillation(model())
    loss, metrics = obj({"images": images()}, generator=gen())
    assert metrics["covered"] == 1.0
    mask = RandomMask()(obj.layout, 6, ratio=0.75, generator=gen())
    keep = (~mask).nonzero()[:, 1].view(6, -1)
    tokens, target = torch.randn(6, 4, 16), torch.randn(6, 16, 4)
    moved = target + mask[..., None] * 9.0
    assert obj.visible_loss(tokens, target, keep).item() == obj.visible_loss(tokens, moved, keep).item()


# MFM (P43) --------------------------------------------------------------------------------------
def test_frequency_loss_scores_removed_frequencies_only():
    from unmask.masking.frequency import conjugate_index

    x = images(4)
    obj = MaskedFrequencyModeling(cfg())
    mask = obj.masker(obj.frequencies, 4, ratio=0.5, generator=gen())
    mask = mask | mask[:, conjugate_index(8, 8)]  # whole conjugate pairs: real corruptions stay exact
    assert frequency_loss(x, x, mask).item() == pytest.approx(0.0, abs=1e-10)
    noise = torch.randn(4, 1, 8, 8)
    at_kept = remove_frequencies(noise, mask)  # noise made of kept frequencies only
    at_removed = remove_frequencies(noise, ~mask)  # noise made of removed frequencies only
    assert frequency_loss(x + at_kept, x, mask).item() < 1e-10  # an error the input already shows: free
    assert frequency_loss(x + at_removed, x, mask).item() > 0.1
    assert torch.allclose(remove_frequencies(x, torch.zeros(4, 64, dtype=torch.bool)), x, atol=1e-6)
    loss, metrics = obj({"images": x}, generator=gen())
    assert metrics["hidden_share"] == 0.5 and torch.isfinite(loss)


# SelectiveMAE (P64) -----------------------------------------------------------------------------
def test_gradient_energy_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0  # one bright pixel in the top-left patch
    e = gradient_energy(x, 2)
    assert e.tolist() == [[2.0, 0.0, 0.0, 0.0]]  # its right and lower differences (1^2 each)


def test_selective_mae_decodes_only_visible_and_selected_targets():
    obj = SelectiveMaskedAutoencoding(model(), ratio=0.75, target_ratio=0.25)
    seen = []
    hook = obj.model.decoder.transformer.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    loss, metrics = obj({"images": images()}, generator=gen())
    hook.remove()
    assert seen == [4 + 4] and metrics["tokens_decoded"] == 8  # 4 visible + 4 targets, not 16
    with pytest.raises(ValueError, match="targets"):
        SelectiveMaskedAutoencoding(model(), ratio=0.25, target_ratio=0.5)


# UMD (P13) --------------------------------------------------------------------------------------
def test_umd_halves_masks_and_schedule():
    a = cosine_alpha_bar(torch.arange(0, 1000, 111))
    assert a[0].item() == 1.0 and (a[1:] < a[:-1]).all() and a[-1].item() < 0.01
    obj = UnifiedMaskedDiffusion(model())
    rec = Recorder(obj.masker)
    obj.masker = rec
    loss, metrics = obj({"images": images(8)}, generator=gen())
    noisy, clean = rec.masks
    assert noisy.shape == (4, 16) and (noisy.sum(1) == 6).all()  # round(0.375 * 16)
    assert clean.shape == (4, 16) and (clean.sum(1) == 12).all()
    assert loss.item() == pytest.approx((0.5 * metrics["dit"] + 0.5 * metrics["mae"]).item(), rel=1e-5)
    assert obj.features(images(2)).shape == (2, 16, 16)


# MTO (P4) ---------------------------------------------------------------------------------------
def test_mto_visible_features_equal_a_drop_hidden_encoder():
    replace = model(hide="replace")
    drop = model(hide="drop")
    drop.load_state_dict(replace.state_dict(), strict=False)
    from unmask.objectives.mto import visible_attention

    mask = RandomMask()(replace.layout, 6, ratio=0.75, generator=gen())
    x = images()
    ref = drop.encoder(x, mask).tokens  # [6, 4, D], visible places ascending
    keep = (~mask).nonzero()[:, 1].view(6, -1)
    mto = replace.encoder(x, mask, attn_mask=visible_attention(mask, 0)).tokens
    plain = replace.encoder(x, mask).tokens
    pick = keep[..., None].expand(-1, -1, 16)
    assert torch.allclose(mto.gather(1, pick), ref, atol=1e-5)
    assert not torch.allclose(plain.gather(1, pick), ref, atol=1e-3)  # mask tokens leak in without it
    with pytest.raises(ValueError, match="replace"):
        MaskedTokenOptimization(model())
    loss, _ = MaskedTokenOptimization(replace)({"images": x}, generator=gen())
    assert torch.isfinite(loss)


def test_every_variant_trains_on_patch_targets():
    x = images()
    assert patchify(x, 2).shape == (6, 16, 4)
