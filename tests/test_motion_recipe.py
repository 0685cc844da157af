"""Recipe `motion` (MMM): the training mask rule, in-betweening keeps the given tokens, and a tiny run
trains, measures and samples a GIF with the expected frame count."""

import pytest
import torch

pytest.importorskip("pybullet_data")
pytest.importorskip("PIL")

from unmask.data import motion  # noqa: E402
from unmask.errors import UnmaskError  # noqa: E402
from unmask.layout import Layout  # noqa: E402
from unmask.masking import RandomMask  # noqa: E402
from unmask.nn import MaskedTokenModel, ModelConfig  # noqa: E402
from unmask.objectives.mmm import MMMTokenModeling  # noqa: E402
from unmask.recipes import Run, get  # noqa: E402
from unmask.recipes.motion import interpolate, slerp_positions  # noqa: E402


def mmm(score_all=True):
    layout = Layout.seq(1, "label") + Layout.streams(5, 6, name="motion")
    model = MaskedTokenModel(ModelConfig(20, layout, dim=16, depth=1, heads=2))
    return MMMTokenModeling(model, RandomMask(("motion",)), score_all=score_all)


def test_mmm_hides_exactly_round_r_n_with_r_in_half_to_one():
    objective = mmm()
    g = torch.Generator().manual_seed(0)
    ratios = objective.draw_ratio(4000, g)
    assert ratios.min() >= 0.5 and ratios.max() <= 1.0
    assert abs(float(ratios.mean()) - 0.75) < 0.01
    ratios = objective.draw_ratio(64, torch.Generator().manual_seed(1))
    mask = objective.masker(objective.layout, 64, ratio=ratios, generator=g)
    assert not mask[:, 0].any()  # the clip label is never hidden
    assert torch.equal(mask[:, 1:].sum(1), torch.round(ratios * 30).long())


def test_mmm_scores_every_motion_token_or_only_hidden():
    hidden = torch.zeros(3, 31, dtype=torch.bool)
    hidden[:, 5] = True
    assert mmm(True).scored(hidden).sum() == 3 * 30
    assert torch.equal(mmm(False).scored(hidden), hidden)
    out = mmm(True)({"tokens": torch.randint(0, 15, (8, 31))}, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)


def test_interpolation_baseline_by_hand():
    x = torch.zeros(1, 6, 2)
    x[0, 1] = torch.tensor([1.0, 0.0])
    x[0, 4] = torch.tensor([4.0, 3.0])
    out = interpolate(x, 2)  # frames 2, 3 between frame 1 and frame 4
    assert torch.allclose(out[0, 2:4], torch.tensor([[2.0, 1.0], [3.0, 2.0]]))
    assert torch.equal(out[0, [0, 1, 4, 5]], x[0, [0, 1, 4, 5]])


def test_slerp_baseline_keeps_the_given_frames_and_each_window_apart():
    """Frames outside the gap are the window's own joint positions; each window of a batch gets what it
    gets alone (a batched interpolation that read another window's end frames would not)."""
    walk = motion.clip_features()[motion.CLIPS.index("walk")]
    x = torch.stack([walk[i:i + 12] for i in (0, 4, 9, 14)])
    k = 3
    out = slerp_positions(x, k)
    truth = motion.joint_positions(x.double())
    assert out.shape == truth.shape and out.dtype == torch.float64
    assert torch.equal(out[:, :k], truth[:, :k])
    assert torch.allclose(out[:, 12 - k:], truth[:, 12 - k:], atol=1e-12)  # the root path is summed up to them
    for m in range(len(x)):
        assert torch.equal(out[m], slerp_positions(x[m:m + 1], k)[0])
    assert (out[:, k:12 - k] - truth[:, k:12 - k]).abs().amax() > 1e-3  # the gap is interpolated, not copied


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    recipe = get("motion")().with_overrides(["train.steps=4", "train.batch_size=8", "model.dim=16", "model.depth=1",
                                             "motion_tokenizer.steps=3", "motion_tokenizer.width=8",
                                             "eval.draws=1", "eval.sample_windows=2", "sampler.steps=2"])
    run = Run(tmp_path_factory.mktemp("motion"), progress=False)
    return recipe, run, recipe.train(run)


def test_tiny_run_measures_and_keeps_the_given_tokens(trained):
    recipe, run, metrics = trained
    assert metrics["given_tokens_kept"] is True
    assert metrics["gap_frames"] == 8 and metrics["test_clips"] == 6
    for key in ("mpjpe_mmm", "mpjpe_linear", "mpjpe_slerp", "mpjpe_tokenizer", "tokenizer_test_left_arm"):
        assert metrics[key] >= 0
    assert (run.folder / "report.md").exists() and (run.folder / "samples.png").exists()


def test_inbetween_changes_only_the_gap(trained):
    recipe, run, _ = trained
    model = recipe.load(run).model
    tokens = torch.randint(0, recipe.settings.motion_tokenizer.codes, (3, 5, 6))
    out = recipe.inbetween(model, torch.tensor([0, 5, 14]), tokens, torch.Generator().manual_seed(0))
    assert torch.equal(out[..., [0, 5]], tokens[..., [0, 5]])
    assert int(out.max()) < recipe.settings.motion_tokenizer.codes


def test_sample_writes_a_gif_with_the_expected_frames(trained, tmp_path):
    from PIL import Image

    recipe, run, _ = trained
    out = recipe.sample(run, recipe.load(run), 2, tmp_path / "walk", prompt="walk")
    assert out.suffix == ".gif"
    image = Image.open(out)
    assert image.n_frames == 2 * (6 + 5)  # down 2 x (one window of 6 token times + 5 new ones chained)
    assert image.size == (2 * 160, 160)  # two motions side by side
    with pytest.raises(UnmaskError, match="backflip"):
        recipe.sample(run, recipe.load(run), 1, tmp_path / "x", prompt="moonwalk")
