"""Video: moving digits, tube and running-cell masks, tubelets, VideoMAE / V2 dual masking and
CrossVideoMAE objectives, and the `videomae-digits` recipe."""

import json

import pytest
import torch
import torch.nn.functional as F

from unmask.cli import main
from unmask.data import digits
from unmask.data.video import DIRECTIONS, bounce, moving_digits
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.masking import RunningCellMask, TubeMask
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.patch import patchify_video, unpatchify_video
from unmask.nn.visible import gather_tokens
from unmask.objectives.cross_video import CrossVideoMAE, nt_xent
from unmask.objectives.mae import patch_mse
from unmask.objectives.videomae import VideoMaskedAutoencoding
from unmask.recipes import get, load_run
from unmask.recipes.run import Run
from unmask.recipes.videomae_digits import VideoMAEDigits

VIDEO = Layout.video(4, 8, 8)  # the recipe's grid: 8 frames / 2, 32 px / 4
TINY_CFG = dict(image_size=(4, 8, 8), channels=1, patch=2, tubelet=2, dim=16, depth=1, heads=2, decoder_dim=8,
                decoder_depth=1, decoder_heads=2, cls_token=False)  # a 2 x 4 x 4 grid of 32 tokens


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return MaskedAutoencoder(MAEConfig(**TINY_CFG))


# moving digits ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips():
    return moving_digits("test", clips_per_digit=2, seed=3)


def test_moving_digits_are_deterministic_under_a_seed(clips):
    again = moving_digits("test", clips_per_digit=2, seed=3)
    other = moving_digits("test", clips_per_digit=2, seed=4)
    assert clips.videos.shape == (720, 1, 8, 32, 32)
    for name in ("videos", "digit", "direction", "speed", "positions"):
        assert torch.equal(getattr(clips, name), getattr(again, name))
    assert not torch.equal(clips.videos, other.videos)
    assert torch.equal(clips.digit[:, 0], other.digit[:, 0])  # clip i shows digit i % n, whatever the seed


def test_digits_stay_whole_inside_the_frame(clips):
    assert clips.positions.min() >= 0 and clips.positions.max() <= 32 - 16
    mass = clips.videos.sum(dim=(-1, -2))  # [M, 1, T]: nothing is cut off, so every frame holds the whole digit
    assert torch.allclose(mass, mass[..., :1].expand_as(mass), atol=1e-4)
    assert (clips.videos[:, 0, :, :, :] > 0).any(-1).any(-1).all()


def test_labels_match_the_motion(clips):
    """The ink's centroid moves from frame 0 to frame 1 by exactly speed * DIRECTIONS[direction]."""
    v = clips.videos[:, 0]  # [M, T, H, W]
    coords = torch.arange(32, dtype=torch.float64)
    mass = v.double().sum(dim=(-1, -2))
    cx = (v.double().sum(-2) * coords).sum(-1) / mass
    cy = (v.double().sum(-1) * coords).sum(-1) / mass
    step = torch.stack([cx[:, 1] - cx[:, 0], cy[:, 1] - cy[:, 0]], dim=1)
    expect = torch.as_tensor(DIRECTIONS, dtype=torch.float64)[clips.direction[:, 0]] * clips.speed[:, :1]
    assert torch.allclose(step, expect, atol=1e-6)
    assert set(clips.direction[:, 0].tolist()) == set(range(8))


def test_bounce_reflects_at_the_walls():
    assert bounce(torch.tensor(14), torch.tensor(3), 5, 16).tolist() == [14, 15, 12, 9, 6]
    assert bounce(torch.tensor(1), torch.tensor(-2), 4, 16).tolist() == [1, 1, 3, 5]


def render(clips, i, t, split="test"):
    """Brute force of one frame: each digit's enlarged image pasted at its place, the maximum where they meet."""
    imgs = digits.load(split).images.float().div(16).view(-1, 8, 8)
    frame = torch.zeros(32, 32)
    for j in range(clips.source.shape[1]):
        x, y = clips.positions[i, j, t].tolist()
        img = imgs[clips.source[i, j]].repeat_interleave(2, 0).repeat_interleave(2, 1)
        frame[y : y + 16, x : x + 16] = torch.maximum(frame[y : y + 16, x : x + 16], img)
    return frame


@pytest.mark.parametrize("per_clip", [1, 2])
def test_frames_are_the_digits_pasted_at_their_positions(per_clip):
    clips = moving_digits("test", digits_per_clip=per_clip, seed=1)
    labels = digits.load("test").labels
    assert torch.equal(clips.digit, labels[clips.source])
    assert torch.equal(clips.source[:, 0], torch.arange(360))
    assert clips.positions.min() >= 0 and clips.positions.max() <= 32 - 16
    for i in (0, 7, 200, 359):
        for t in range(8):
            assert torch.equal(clips.videos[i, 0, t], render(clips, i, t))


# tubelets -----------------------------------------------------------------------------------------
def test_tubelet_round_trip():
    v = torch.rand(3, 2, 8, 32, 32, generator=gen())
    tubelets = patchify_video(v, 4, 2)
    assert tubelets.shape == (3, 256, 2 * 4 * 4 * 2)
    assert torch.equal(unpatchify_video(tubelets, 4, 2, 2, 8, 32, 32), v)
    cfg = VideoMAEDigits().model_config()
    x = torch.rand(2, 1, 8, 32, 32, generator=gen(1))
    assert cfg.grid == (4, 8, 8) and torch.equal(unpatchify_video(cfg.patchify(x), 4, 2, 1, 8, 32, 32), x)
    with pytest.raises(ValueError, match="tile"):
        unpatchify_video(tubelets, 4, 2, 1, 8, 32, 32)


# masks --------------------------------------------------------------------------------------------
def test_tube_masks_are_identical_across_time_slices():
    mask = TubeMask()(VIDEO, 32, ratio=0.9, generator=gen()).view(32, 4, 64)
    assert (mask == mask[:, :1]).all()
    assert (mask.sum(-1) == 58).all()  # round(0.9 * 64) in every slice


@pytest.mark.parametrize("ratio,k", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_running_cell_keeps_its_share_in_every_cell_and_shifts_per_slice(ratio, k):
    mask = RunningCellMask()(VIDEO, 16, ratio=ratio, generator=gen(2))
    cells = mask.view(16, 4, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(16, 4, 16, 4)  # [B, t, cell, slot]
    assert (cells.sum(-1) == k).all()  # k of 4 hidden (4 - k kept) in every 2x2 cell of every slice
    assert (cells == cells[:, :, :1]).all()  # every cell of a slice alike
    assert torch.equal(cells[:, 1:], cells[:, :-1].roll(-1, dims=-1))  # slot s at t+1 = slot s+1 at t
    assert (cells[:, 1:] != cells[:, :-1]).any(-1).all()  # so the pattern changes from slice to slice
    assert (mask.view(16, 4, 64).sum(1) == k).all()  # over 4 slices every place is hidden exactly k times
    starts = {tuple(c.tolist()) for c in cells[:, 0, 0]}
    assert len(starts) > 1  # the starting offset is drawn per row


def test_running_cell_matches_videomae_v2_queue():
    """Brute force of V2's Cell: queue [1]*k + [0]*(4-k); slice t shows queue[(slot + ptr) % 4] with the
    pointer advancing by one per slice; the mask is one of those four maps."""
    k, t_slices = 2, 4
    maps = set()
    for start in range(4):
        rows = []
        for t in range(t_slices):
            ptr = start + t + 1
            unit = [[1 if (s + ptr) % 4 < k else 0 for s in (0, 1)], [1 if (s + ptr) % 4 < k else 0 for s in (2, 3)]]
            rows.append(torch.tensor(unit, dtype=torch.bool).repeat(4, 4).flatten())
        maps.add(tuple(torch.cat(rows).tolist()))
    drawn = {tuple(m.tolist()) for m in RunningCellMask()(VIDEO, 64, ratio=0.5, generator=gen(3))}
    assert drawn == maps


def test_running_cell_refuses_odd_grids_and_non_video():
    with pytest.raises(ValueError, match="2x2"):
        RunningCellMask()(Layout.video(2, 3, 4), 1, ratio=0.5)
    with pytest.raises(ValueError, match="video"):
        RunningCellMask()(Layout.grid(4, 4), 1, ratio=0.5)


# objectives ---------------------------------------------------------------------------------------
def test_dual_masking_loss_counts_exactly_the_hidden_and_decoded_tokens():
    obj = VideoMaskedAutoencoding(tiny_model(), ratio=0.75, decoder_ratio=0.5).eval()
    videos = torch.rand(3, 1, 4, 8, 8, generator=gen(4))
    mask = obj.draw_mask(3, gen(5))
    decoder_mask = obj.draw_decoder_mask(3, gen(6))
    target = torch.randn(3, 32, 8, generator=gen(7))
    out = obj.dual_reconstruction(videos, mask, decoder_mask, target)
    scored = mask & ~decoder_mask
    assert torch.equal(out.decoded, (~decoder_mask).nonzero()[:, 1].view(3, -1))
    assert int(out.scored.sum()) == int(scored.sum()) > 0
    # brute force: the same predictions, the mean error over exactly the scored places
    pred = obj.model.decoder(obj.model.encoder(videos, mask), out.decoded)
    errors = patch_mse(pred, gather_tokens(target, out.decoded))
    assert torch.allclose(out.loss, errors[out.scored].mean(), atol=1e-6)
    for b, place in [(0, int((~mask[0] & ~decoder_mask[0]).nonzero()[0])),  # seen by the encoder, decoded
                     (1, int((mask[1] & decoder_mask[1]).nonzero()[0])),  # hidden, not decoded
                     (2, int((~mask[2] & decoder_mask[2]).nonzero()[0]))]:  # seen, not decoded
        changed = target.clone()
        changed[b, place] += 10.0
        assert obj.dual_reconstruction(videos, mask, decoder_mask, changed).loss == out.loss
    b, place = (int(i) for i in scored.nonzero()[0])
    changed = target.clone()
    changed[b, place] += 10.0
    assert obj.dual_reconstruction(videos, mask, decoder_mask, changed).loss > out.loss


def test_videomae_step_and_decoder_tokens():
    videos = torch.rand(4, 1, 4, 8, 8, generator=gen(8))
    plain = VideoMaskedAutoencoding(tiny_model(), ratio=0.75)
    dual = VideoMaskedAutoencoding(tiny_model(), ratio=0.75, decoder_ratio=0.5)
    a, b = plain({"videos": videos}, gen(9)), dual({"videos": videos}, gen(9))
    assert a.metrics["decoder_tokens"] == 32  # visible + a mask token at every hidden place
    assert b.metrics["decoder_tokens"] == 8 + 16  # visible + the 16 places the running cell keeps
    a.loss.backward()
    assert plain.model.decoder.head.weight.grad.abs().sum() > 0
    # plain VideoMAE: MAE's loss on the hidden tubelets of the norm-pix targets
    mask = plain.draw_mask(4, gen(10))
    loss, errors, out = plain.reconstruction(videos, mask)
    assert errors.shape == (4, 24) and torch.allclose(loss, errors.mean())
    with pytest.raises(ValueError, match="video"):
        VideoMaskedAutoencoding(MaskedAutoencoder(MAEConfig(image_size=(8, 8), patch=2)))


def test_nt_xent_matches_a_loop():
    a, b = torch.randn(5, 6, generator=gen(11)), torch.randn(5, 6, generator=gen(12))
    z = F.normalize(torch.cat([a, b]), dim=-1)
    total = 0.0
    for i in range(10):
        logits = torch.tensor([float(z[i] @ z[j]) / 0.1 for j in range(10) if j != i])
        positive = (i + 5) % 10
        total += -(logits[positive - (positive > i)] - logits.logsumexp(0))
    assert nt_xent(a, b, 0.1).item() == pytest.approx(total.item() / 10, rel=1e-5)


def test_cross_video_frame_is_an_image_through_the_same_encoder():
    obj = CrossVideoMAE(tiny_model(), ratio=0.75)
    still = torch.rand(2, 1, 1, 8, 8, generator=gen(13)).expand(-1, -1, 4, -1, -1)  # a clip that does not move
    tokens, pos = obj.frame_tokens(still, torch.tensor([0, 3]))
    video_tokens = obj.model.config.patchify(still).view(2, 2, 16, -1)
    assert torch.equal(tokens, video_tokens[:, 0]) and torch.equal(tokens, video_tokens[:, 1])
    grid_pos = obj.model.encoder.pos.view(2, 16, -1)
    assert torch.equal(pos[0], grid_pos[0]) and torch.equal(pos[1], grid_pos[1])  # frame 3 is in slice 1
    out = obj({"videos": torch.rand(6, 1, 4, 8, 8, generator=gen(14))}, gen(15))
    expected = out.metrics["reconstruction"] + 0.1 * out.metrics["alignment"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert obj.projector[0].weight.grad.abs().sum() > 0


# recipe -------------------------------------------------------------------------------------------
TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "model.decoder_dim=8", "model.decoder_depth=1", "eval.probe_draws=1", "data.clips_per_digit=1"]


def test_recipe_registered_with_typed_settings():
    assert get("videomae-digits") is VideoMAEDigits
    with pytest.raises(UnmaskError, match="objective.variant='v3' is not allowed"):
        VideoMAEDigits().with_overrides(["objective.variant=v3"])
    with pytest.raises(UnmaskError, match="objective.decoder_ratio=0.9 is out of range"):
        VideoMAEDigits().with_overrides(["objective.decoder_ratio=0.9"])
    assert isinstance(VideoMAEDigits().with_overrides(["objective.variant=crossvideo"]).objective(), CrossVideoMAE)
    assert VideoMAEDigits().with_overrides(["objective.variant=v2"]).objective().decoder_ratio == 0.5
    s = VideoMAEDigits().settings  # the defaults of the recipe before sections
    assert (s.train.steps, s.train.batch_size, s.train.lr, s.train.warmup) == (600, 64, 1.5e-3, 50)
    assert (s.objective.ratio, s.objective.norm_pix, s.objective.cross_weight, s.data.clips_per_digit) == \
        (0.9, False, 0.1, 2)


def test_recipe_probes_both_tasks_and_declares_their_rows():
    recipe = VideoMAEDigits().with_overrides(TINY)
    train = recipe.probe_set("train")
    assert train.inputs.shape == (1437, 1, 8, 32, 32) and set(train.labels) == {"digit", "direction"}
    assert torch.equal(train.labels["digit"], digits.load("train").labels)
    assert recipe.probe_set("train").inputs is train.inputs  # made once per process
    assert recipe.probe_set("test").inputs.shape[0] == 360
    report = recipe.report({})
    assert [t.title for t in report.tables] == ["Task: which digit moves (10 classes)",
                                                "Task: where it moves (8 directions)"]
    keys = [m.key for m in report.tables[1].rows]
    assert "pretrained_direction_linear_few" in keys and "pixels_direction_knn" in keys
    assert keys[-1] == "direction_few_shot_gain_over_random_init"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["videomae", "v2", "crossvideo"])
def test_recipe_trains_evaluates_and_reloads(variant, tmp_path):
    recipe = VideoMAEDigits().with_overrides(TINY + [f"objective.variant={variant}"])
    metrics = recipe.train(Run(tmp_path, progress=False))
    for key in ("pretrained_digit_linear_few", "random_init_direction_linear_few", "pixels_digit_knn"):
        assert 0.0 <= metrics[key] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    loaded = load_run(tmp_path)
    assert loaded.recipe.settings == recipe.settings
    assert loaded.objective.features(torch.rand(2, 1, 8, 32, 32)).shape == (2, 256, 16)
    assert recipe.sample(loaded.run, loaded.objective, 2, tmp_path / "recon.x") == tmp_path / "recon.png"
    assert (tmp_path / "recon.png").read_bytes()[:4] == b"\x89PNG"


def test_recipe_command_line_trains_evaluates_and_samples(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "videomae-digits", *TINY, "eval.baselines=false", "--out", str(run), "--no-progress"]) == 0
    for name in ("metrics.json", "report.md", "metrics.csv"):
        assert (run / name).is_file(), name
    assert "pretrained_direction_linear_few" in json.loads((run / "metrics.json").read_text())
    assert main(["eval", str(run), "eval.probe_draws=2"]) == 0
    assert "pretrained_direction_linear_few_std: " in capsys.readouterr().out
    assert "## Task: where it moves (8 directions)" in (run / "report.md").read_text()
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv,needle", [
    (["train.batch_size=0"], "train.batch_size=0 is out of range"),
    (["model.heads=two"], "model.heads='two' is not an integer"),
    (["model.decoder_depth=0"], "model.decoder_depth=0 is out of range; model.decoder_depth must be >= 1"),
    (["data.clips_per_digit=9"], "data.clips_per_digit=9 is out of range; data.clips_per_digit must be in [1, 8]"),
    (["data.clip=2"], "unknown key 'data.clip'; did you mean 'data.clips_per_digit'?"),
    (["objective.variant=v3"], "objective.variant='v3' is not allowed"),
    (["objective.cross_weight=x"], "objective.cross_weight='x' is not a number"),
    (["eval.baselines=2"], "eval.baselines='2' is not a boolean"),
])
def test_recipe_bad_settings_are_one_line_and_exit_2(argv, needle, capsys):
    assert main(["train", "videomae-digits", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


@pytest.mark.slow
def test_videomae_features_beat_random_init_by_five_points(tmp_path):
    torch.set_num_threads(1)
    metrics = VideoMAEDigits().train(Run(tmp_path, progress=False))
    assert max(metrics["digit_few_shot_gain_over_random_init"],
               metrics["direction_few_shot_gain_over_random_init"]) >= 0.05
