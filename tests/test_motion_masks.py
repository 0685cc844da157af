"""MMDM's maskers (exact counts, whole frames, one body part over one span), the token mask as features,
the denoiser's masking in the embedding space, completion that keeps what is given, and the recipe."""

import pytest
import torch

from unmask.data.motion import BODY_PARTS, F
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.masking import BodyPartMask, MixtureMask, TimeFrameMask
from unmask.nn.motion_denoiser import PARTS, MotionDenoiser, MotionDenoiserConfig, part_features
from unmask.objectives.mmdm import MotionMaskedDiffusion

pytestmark = pytest.mark.usefixtures("one_thread")

P, T = len(PARTS), 12
LAYOUT = Layout.streams(P, T, name="motion")


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_time_frame_mask_hides_whole_frames_exactly(ratio):
    mask = TimeFrameMask()(LAYOUT, 16, ratio=ratio, generator=torch.Generator().manual_seed(0))
    grid = mask.view(16, P, T)
    assert (grid.sum((1, 2)) == P * round(ratio * T)).all()
    assert (grid.all(1) == grid.any(1)).all()  # a frame is hidden in every part or in none


def test_time_frame_mask_per_row_ratio_and_choice_varies():
    r = torch.tensor([0.0, 0.5, 1.0, 0.25])
    mask = TimeFrameMask()(LAYOUT, 4, ratio=r, generator=torch.Generator().manual_seed(1))
    assert mask.view(4, P, T)[:, 0].sum(1).tolist() == [0, 6, 12, 3]
    many = TimeFrameMask()(LAYOUT, 64, ratio=0.5, generator=torch.Generator().manual_seed(2))
    assert len({tuple(row.tolist()) for row in many}) > 32


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_body_part_mask_hides_one_part_over_one_span(ratio):
    mask = BodyPartMask()(LAYOUT, 32, ratio=ratio, generator=torch.Generator().manual_seed(0))
    grid = mask.view(32, P, T)
    n = round(ratio * T)
    assert (grid.sum((1, 2)) == n).all()
    assert (grid.any(2).sum(1) == 1).all()  # exactly one part
    frames = grid.any(1).long()  # [B, T]
    assert ((frames[:, 1:] - frames[:, :-1]).clamp(min=0).sum(1) + frames[:, 0] == 1).all()  # one run
    assert len(set(grid.any(2).float().argmax(1).tolist())) > 1


def test_body_part_mask_given_part_and_allowed_parts():
    mask = BodyPartMask()(LAYOUT, 8, ratio=1.0, part=4)
    assert mask.view(8, P, T)[:, 4].all() and mask.sum() == 8 * T
    picked = BodyPartMask(parts=(1, 2))(LAYOUT, 64, ratio=0.5, generator=torch.Generator().manual_seed(3))
    assert set(picked.view(64, P, T).any(2).float().argmax(1).tolist()) == {1, 2}
    with pytest.raises(ValueError, match="streams"):
        BodyPartMask()(Layout.seq(10), 2, ratio=0.5)


def test_body_part_mask_hides_exactly_the_part_features():
    arm = PARTS.index("left_arm")
    mask = BodyPartMask()(LAYOUT, 1, ratio=0.5, part=arm, generator=torch.Generator().manual_seed(4))
    feats = part_features(mask, T)[0]  # [T, F]
    frames = mask.view(P, T)[arm]
    expected = torch.zeros(T, F, dtype=torch.bool)
    expected[frames.nonzero()[:, 0][:, None], torch.tensor(BODY_PARTS["left_arm"])[None]] = True
    assert torch.equal(feats, expected) and feats.sum() == 6 * len(BODY_PARTS["left_arm"]) == 42


def make(masker=None, seed=0):
    torch.manual_seed(seed)
    return MotionMaskedDiffusion(MotionDenoiser(MotionDenoiserConfig(frames=T, dim=16, depth=1, heads=2)), masker,
                                 ratio=(0.25, 1.0), steps=20).eval()


def test_hidden_tokens_do_not_read_their_features():
    obj = make()
    x = torch.randn(2, T, F)
    hidden = TimeFrameMask()(LAYOUT, 2, ratio=0.5, generator=torch.Generator().manual_seed(5))
    where = part_features(hidden, T)
    y = torch.where(where, torch.randn(2, T, F), x)
    step = torch.tensor([3, 7])
    assert torch.allclose(obj.denoiser(x, step, hidden), obj.denoiser(y, step, hidden), atol=1e-6)
    assert not torch.allclose(obj.denoiser(x, step), obj.denoiser(y, step), atol=1e-4)


@pytest.mark.parametrize("mask_hidden", [False, True])
def test_completion_never_alters_given_values(mask_hidden):
    obj = make()
    x = torch.randn(3, T, F)
    obj.set_normalisation(x)
    known = torch.ones_like(x, dtype=torch.bool)
    known[0, 2:10] = False
    known[1, :, list(BODY_PARTS["left_arm"])] = False
    known[2] = torch.rand(T, F, generator=torch.Generator().manual_seed(6)) < 0.5
    out = obj.complete(x, known, sample_steps=5, mask_hidden=mask_hidden, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out[known], x[known]) and torch.isfinite(out).all()
    assert not torch.equal(out[~known], x[~known])
    again = obj.complete(x, known, sample_steps=5, mask_hidden=mask_hidden, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, again)


@pytest.mark.parametrize("masker", [None, TimeFrameMask(), BodyPartMask(),
                                    MixtureMask(maskers=(TimeFrameMask(), BodyPartMask()))])
def test_objective_trains_every_mask(masker):
    obj = make(masker).train()
    out = obj({"x": torch.randn(4, T, F)}, torch.Generator().manual_seed(8))
    assert torch.isfinite(out.loss) and ("mse_hidden" in out.metrics) == (masker is not None)
    out.loss.backward()
    assert obj.denoiser.mask_embed.grad is not None or masker is None


def test_recipe_is_registered_and_checks_settings():
    from unmask.recipes import get

    cls = get("motion-masks")
    assert cls.roles == ("main", "parts", "both", "plain")
    with pytest.raises(UnmaskError, match="eval.given"):
        cls().with_overrides(["eval.given=6"])
    r = cls()
    known = r.tasks(torch.zeros(2, 12, F))
    assert (~known["frames"]).sum() == 2 * 8 * F
    assert (~known["part"]).sum() == 2 * 12 * len(BODY_PARTS["left_arm"])
