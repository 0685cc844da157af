"""Users' own images as `data.source` of `videomae-digits`: the moving clips are made from their
training images (probes from the held-out ones), a clip's first frame holds its image's exact pixels
at its place, RUN/data.json counts what was read, data without labels reports the held-out loss, and
an empty folder is refused in one line. The images are made here, at run time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny
from unmask.data.user_images import hash_split
from unmask.data.video import moving_images
from unmask.recipes.videomae_digits import VideoMAEDigits, probe_clips

pytestmark = pytest.mark.usefixtures("one_thread")

# 8x8 grey levels 0..16, none symmetric and no two with the same sum of levels (so a clip's ink tells
# which image it shows)
GRIDS = [(np.arange(64).reshape(8, 8) * c + d) % 17 for c, d in ((1, 0), (3, 1), (5, 2), (7, 4), (11, 5), (13, 9))]
CLASSES = {"a": (0, 1, 2), "b": (3, 4, 5)}


def eight_bit(levels):
    """Grey levels 0..16 as the 8-bit values that read back as exactly those levels."""
    return np.rint(np.asarray(levels) * 255 / 16).astype(np.uint8)


def make_folder(root):
    """Classes `a` and `b`, three images each; returns {relative path: levels}."""
    truth = {}
    for name, rows in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in rows:
            Image.fromarray(eight_bit(GRIDS[i])).save(root / name / f"{i}.png")
            truth[f"{name}/{i}.png"] = GRIDS[i]
    return truth


def test_grids_tell_each_other_apart():
    assert len({int(g.sum()) for g in GRIDS}) == len(GRIDS)
    assert all(not np.array_equal(g, g.T) for g in GRIDS)


def test_first_frame_holds_the_image_at_its_place():
    """Clip i opens with image i % n, enlarged 2x by nearest neighbour, at positions[i, 0, 0], black elsewhere."""
    images = torch.from_numpy(np.stack(GRIDS))
    clips = moving_images(images, torch.arange(6), clips_per_digit=2, seed=5)
    assert clips.videos.shape == (12, 1, 8, 32, 32)
    for i in range(12):
        x, y = clips.positions[i, 0, 0].tolist()
        frame = clips.videos[i, 0, 0]
        truth = torch.from_numpy(GRIDS[i % 6]).float() / 16
        assert torch.equal(frame[y : y + 16 : 2, x : x + 16 : 2], truth)  # top-left of each 2x2 block
        assert torch.equal(frame[y + 1 : y + 16 : 2, x + 1 : x + 16 : 2], truth)  # bottom-right
        rest = frame.clone()
        rest[y : y + 16, x : x + 16] = 0
        assert not rest.any()
        assert clips.digit[i, 0] == i % 6 and clips.source[i, 0] == i % 6


def test_clips_are_made_from_the_users_images_by_split(tmp_path):
    truth = make_folder(tmp_path / "imgs")
    recipe = VideoMAEDigits().with_overrides(tiny("videomae-digits", f"data.source={tmp_path / 'imgs'}"))
    keys = sorted(truth)
    held = dict(zip(keys, hash_split(keys, 0.2).tolist(), strict=True))
    by_split = {"train": [k for k in keys if not held[k]], "test": [k for k in keys if held[k]]}
    assert len(by_split["train"]) >= 2 and len(by_split["test"]) >= 1
    for split, split_keys in by_split.items():  # probe clip i opens with image i of the split, at its place
        probed, clips = recipe.probe_set(split), probe_clips(split, recipe.settings.data)
        assert probed.inputs.shape == (len(split_keys), 1, 8, 32, 32)
        assert probed.labels["digit"].tolist() == [0 if k.startswith("a/") else 1 for k in split_keys]
        for i, key in enumerate(split_keys):
            x, y = clips.positions[i, 0, 0].tolist()
            expect = torch.from_numpy(truth[key]).float().div(16).repeat_interleave(2, 0).repeat_interleave(2, 1)
            assert torch.equal(probed.inputs[i, 0, 0, y : y + 16, x : x + 16], expect), (split, key)
    # training clip i (one per image at clips_per_digit=1, drawn with train.seed) shows training image i
    videos = recipe.training_data(_NoRun())["videos"]
    ink = [round(float(v[0, 0].sum()) * 16 / 4) for v in videos]  # each level shows on 2x2 pixels
    assert ink == [int(truth[k].sum()) for k in by_split["train"]]
    assert "which image class moves (2 classes)" in recipe.tasks["digit"]


class _NoRun:
    """A run folder that takes data.json and keeps nothing."""

    def write_json(self, name, value):
        pass


def train(cli, out, *changes):
    ran = cli("train", "videomae-digits", "--out", out, "--no-progress", *tiny("videomae-digits", *changes))
    assert ran.code == 0, ran.err
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "data.json").read_text())


def test_train_on_a_folder_probes_its_classes_and_counts_what_was_read(tmp_path, cli):
    truth = make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "b" / "notes.png").write_text("not a picture")
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'imgs'}")
    assert (data["files"], data["examples"], data["skipped"]) == (7, 6, 1)
    assert data["classes"] == {"a": 3, "b": 3} and data["grid"] == [8, 8]
    assert data["held_out"] == int(hash_split(sorted(truth), 0.2).sum())
    assert "pretrained_digit_linear" in metrics and "pretrained_direction_knn" in metrics
    assert "heldout_loss" not in metrics
    report = (tmp_path / "run" / "report.md").read_text()
    assert "which image class moves (2 classes)" in report and f"({data['held_out']} images)" in report
    ran = cli("sample", tmp_path / "run", "--n", "2", "--out", tmp_path / "s")
    assert ran.code == 0 and (tmp_path / "s.png").is_file(), ran.err


def test_without_labels_the_run_reports_the_held_out_loss(tmp_path, cli):
    for i, levels in enumerate(GRIDS[:4]):
        Image.fromarray(eight_bit(levels)).save(tmp_path / f"{i}.png")
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path}/*.png")
    assert list(metrics) == ["heldout_loss"] and metrics["heldout_loss"] > 0
    assert (data["examples"], data["classes"]) == (4, {})
    assert "nothing to probe" in (tmp_path / "run" / "report.md").read_text()


def test_an_empty_folder_is_refused_in_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    ran = cli("train", "videomae-digits", "--out", tmp_path / "never", "--no-progress",
              *tiny("videomae-digits", f"data.source={tmp_path / 'empty'}"))
    assert ran.code == 2, ran
    assert ran.err.startswith("unmask: error: ") and ran.err.count("\n") == 1 and "no data files" in ran.err
    assert not (tmp_path / "never" / "model.safetensors").exists()
