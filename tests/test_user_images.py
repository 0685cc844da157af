"""Users' own images as `data.source` of the digit recipes: every Pillow mode a PNG or JPEG can hold
comes back as the exact grey levels it was written with, classes come from subfolders, a `.npy`
array with its labels, counted skips in RUN/data.json, and one-line refusals of data that cannot be
used. The images are made here, at run time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from unmask.data.user_images import hash_split, read_images

pytestmark = pytest.mark.usefixtures("one_thread")

# 8x8 grey levels 0..16, none symmetric (a transposed or flipped image reads differently)
LEVELS = np.arange(64).reshape(8, 8) % 17
OTHER = (np.arange(64).reshape(8, 8) * 5 + 3) % 17


def eight_bit(levels):
    """Grey levels 0..16 as the 8-bit values that read back as exactly those levels."""
    return np.rint(np.asarray(levels) * 255 / 16).astype(np.uint8)


def make_folder(root):
    """Class `a`: two images, class `b`: four, and one text file named .png; a text file the reader
    never looks at. Returns {relative path: the levels it must read back as} of the exact ones."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(eight_bit(LEVELS)).save(root / "a" / "grey.png")
    # RGBA: the left half transparent (reads as 0), the right half opaque; a pure blue pixel averages to
    # 255 / 3, level 5 (a luma weighting would give 2)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, 4:, :3] = eight_bit(OTHER)[:, 4:, None]
    rgba[:, 4:, 3] = 255
    rgba[:, :4, :3] = 200  # colour under full transparency must not show
    rgba[0, 7] = (0, 0, 255, 255)
    Image.fromarray(rgba).save(root / "a" / "rgba.png")
    rgba_levels = OTHER.copy()
    rgba_levels[:, :4] = 0
    rgba_levels[0, 7] = 5
    # palette: 17 grey entries, the image holds palette indices
    palette = Image.new("P", (8, 8))
    palette.putdata(LEVELS[::-1].reshape(-1).tolist())
    palette.putpalette([v for level in range(17) for v in [int(eight_bit(level))] * 3])
    palette.save(root / "b" / "palette.png")
    Image.fromarray(np.rint(OTHER * 65535 / 16).astype(np.uint16)).save(root / "b" / "deep.png")
    assert Image.open(root / "b" / "deep.png").mode.startswith("I")  # really 16 bits
    Image.fromarray(np.full((8, 8), eight_bit(8), np.uint8)).save(root / "b" / "flat.jpg", quality=95)
    Image.fromarray(eight_bit(np.repeat(OTHER, 2, axis=1))).save(root / "b" / "wide.png")  # 16 wide, 8 high
    (root / "b" / "notes.png").write_text("not a picture")
    (root / "b" / "readme.txt").write_text("not data")
    return {"a/grey.png": LEVELS, "a/rgba.png": rgba_levels, "b/palette.png": LEVELS[::-1], "b/deep.png": OTHER,
            "b/flat.jpg": np.full((8, 8), 8), "b/wide.png": OTHER}


def test_every_mode_reads_back_as_the_levels_it_was_written_with(tmp_path):
    truth = make_folder(tmp_path / "imgs")
    images = read_images(tmp_path / "imgs")
    assert sorted(images.keys) == sorted(truth)
    for key, image, label in zip(images.keys, images.images, images.labels.tolist(), strict=True):
        assert np.array_equal(image.view(8, 8).numpy(), truth[key]), key
        assert images.classes[label] == key.split("/")[0], key
    assert images.classes == ("a", "b") and images.class_counts() == {"a": 2, "b": 4}
    assert images.stats.to_dict()["skipped_by_reason"] == {
        "not an image": {"count": 1, "examples": [str(tmp_path / "imgs" / "b" / "notes.png")]}}


def test_invert_turns_levels_around_and_transparency_stays_background(tmp_path):
    make_folder(tmp_path / "imgs")
    images = read_images(tmp_path / "imgs", invert=True)
    by_key = dict(zip(images.keys, images.images, strict=True))
    assert np.array_equal(by_key["a/grey.png"].view(8, 8).numpy(), 16 - LEVELS)
    rgba = by_key["a/rgba.png"].view(8, 8).numpy()
    assert (rgba[:, :4] == 0).all() and np.array_equal(rgba[1:, 4:], 16 - OTHER[1:, 4:])


def test_resizing_averages_the_area_each_pixel_covers(tmp_path):
    big = np.kron(LEVELS, np.ones((3, 3), int))  # 24 x 24 of 3 x 3 blocks
    Image.fromarray(eight_bit(big)).save(tmp_path / "big.png")
    Image.fromarray(eight_bit(LEVELS)).save(tmp_path / "small.png")
    images = read_images(tmp_path / "*.png")
    assert images.keys[0].endswith("big.png") and np.array_equal(images.images[0].view(8, 8).numpy(), LEVELS)
    quarter = np.arange(16).reshape(4, 4) * 7 % 15  # 0..14, not symmetric
    chequer = np.kron(quarter, np.ones((2, 2), int)) + 2 * (np.indices((8, 8)).sum(0) % 2)  # a, a+2 / a+2, a
    Image.fromarray(eight_bit(chequer)).save(tmp_path / "small.png")
    halves = read_images(tmp_path / "*.png", size=(4, 4))  # each pixel the mean of its 2 x 2 block: a + 1
    assert np.array_equal(halves.images[1].view(4, 4).numpy(), quarter + 1)


def test_a_mode_that_cannot_become_grey_is_a_counted_skip(tmp_path, monkeypatch):
    Image.fromarray(eight_bit(LEVELS)).save(tmp_path / "ok1.png")
    Image.fromarray(eight_bit(OTHER)).save(tmp_path / "ok2.png")
    Image.fromarray(np.stack([eight_bit(LEVELS)] * 2, -1)).save(tmp_path / "odd.png")
    assert Image.open(tmp_path / "odd.png").mode == "LA"
    convert = Image.Image.convert

    def refuse_la(self, mode=None, *args, **kwargs):
        if self.mode == "LA":
            raise ValueError("conversion not supported")
        return convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", refuse_la)
    images = read_images(tmp_path)
    assert len(images.keys) == 2
    assert images.stats.skips.counts == {"image mode LA cannot be converted to grey": 1}


def test_the_split_is_by_hash_of_the_path_and_leaves_one_on_each_side():
    keys = [f"x/{i}.png" for i in range(200)]
    out = hash_split(keys, 0.2)
    assert 20 < int(out.sum()) < 60
    assert hash_split(keys[::-1], 0.2).tolist() == out.tolist()[::-1]  # no dependence on order
    again = hash_split(keys[:50], 0.2)
    assert again.tolist() == out[:50].tolist() or not out[:50].any()  # nor on which other files exist
    few = hash_split(["one", "two"], 0.0)
    assert few.tolist().count(True) == 1
    assert hash_split(["one", "two"], 1.0).tolist().count(True) == 1


def train(cli, out, *overrides, recipe="digits"):
    ran = cli("train", recipe, "--out", out, "--no-progress", *TINY[recipe], *overrides)
    assert ran.code == 0, ran.err
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "data.json").read_text())


def test_digits_train_on_a_folder_with_classes_and_say_what_was_read(tmp_path, cli):
    make_folder(tmp_path / "imgs")
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'imgs'}")
    assert (data["files"], data["examples"], data["skipped"]) == (7, 6, 1)
    assert data["skipped_by_reason"]["not an image"]["count"] == 1
    assert data["classes"] == {"a": 2, "b": 4}
    assert data["held_out"] == metrics["held_out_images"] >= 1
    assert metrics["training_images"] + metrics["held_out_images"] == 6
    assert "label_accuracy" in metrics and "conditional_accuracy" in metrics
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Data: 6 examples from 7 files" in report and "not an image: 1" in report
    assert cli("eval", tmp_path / "run").code == 0
    ran = cli("sample", tmp_path / "run", "--n", "4", "--out", tmp_path / "s")
    assert ran.code == 0 and (tmp_path / "s.png").is_file(), ran.err


def test_digits_without_labels_skip_the_label_metrics_and_say_so(tmp_path, cli):
    for i, levels in enumerate((LEVELS, OTHER, LEVELS.T, OTHER.T)):
        Image.fromarray(eight_bit(levels)).save(tmp_path / f"{i}.png")
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path}/*.png")
    assert data["classes"] == {} and data["examples"] == 4
    assert "label_accuracy" not in metrics and "conditional_accuracy" not in metrics
    assert "inpaint_mse" in metrics and "novelty" in metrics
    assert "carry no labels" in (tmp_path / "run" / "report.md").read_text()


def test_a_npy_array_with_its_labels(tmp_path, cli):
    rows = np.stack([LEVELS, OTHER, LEVELS[::-1], OTHER.T, LEVELS.T, OTHER[::-1]]).astype(np.float64) / 16
    rows[2, 0, 0] = np.nan
    rows[4, 3, 3] = 1.5
    np.save(tmp_path / "x.npy", rows)
    np.save(tmp_path / "y.npy", np.array([7, 2, 7, 2, 9, 7]))
    images = read_images(tmp_path / "x.npy", labels=str(tmp_path / "y.npy"))
    assert images.keys == ("x.npy#0", "x.npy#1", "x.npy#3", "x.npy#5")
    assert np.array_equal(images.images.view(-1, 8, 8).numpy(), np.stack([LEVELS, OTHER, OTHER.T, OTHER[::-1]]))
    assert images.classes == ("2", "7") and images.labels.tolist() == [1, 0, 0, 1]  # numbers keep their order
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'x.npy'}",
                          f"data.labels={tmp_path / 'y.npy'}")
    assert (data["files"], data["examples"], data["skipped"]) == (1, 4, 2)
    assert {r: v["count"] for r, v in data["skipped_by_reason"].items()} == {
        "non-finite values": 1, "values outside 0..1": 1}
    assert data["skipped_by_reason"]["non-finite values"]["examples"] == [f"{tmp_path / 'x.npy'}[2]"]
    assert data["classes"] == {"2": 2, "7": 2}


def test_integer_arrays_take_their_white_from_the_setting(tmp_path):
    np.save(tmp_path / "x.npy", np.stack([LEVELS, OTHER]).astype(np.int64))
    images = read_images(tmp_path / "x.npy", white=16)
    assert np.array_equal(images.images.view(-1, 8, 8).numpy(), np.stack([LEVELS, OTHER]))


def test_mae_digits_probe_folder_classes_and_without_labels_report_the_held_out_loss(tmp_path, cli):
    make_folder(tmp_path / "imgs")
    metrics, _ = train(cli, tmp_path / "run", f"data.source={tmp_path / 'imgs'}", recipe="mae-digits")
    assert "mae_linear" in metrics and "heldout_loss" not in metrics
    for i, levels in enumerate((LEVELS, OTHER, LEVELS.T, OTHER.T)):
        Image.fromarray(eight_bit(levels)).save(tmp_path / f"{i}.png")
    metrics, data = train(cli, tmp_path / "bare", f"data.source={tmp_path}/*.png", recipe="mae-digits")
    assert list(metrics) == ["heldout_loss"] and metrics["heldout_loss"] > 0 and data["examples"] == 4
    assert "nothing to probe" in (tmp_path / "bare" / "report.md").read_text()


def refused(cli, tmp_path, *overrides, recipe="digits"):
    ran = cli("train", recipe, "--out", tmp_path / "never", "--no-progress", *TINY[recipe], *overrides)
    assert ran.code == 2, ran
    assert ran.err.startswith("unmask: error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err


def test_data_that_cannot_be_used_is_refused_in_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    assert "no data files" in refused(cli, tmp_path, f"data.source={tmp_path / 'empty'}")
    (tmp_path / "texts").mkdir()
    for i in range(3):
        (tmp_path / "texts" / f"{i}.png").write_text("words")
    assert "none of the 3 files" in refused(cli, tmp_path, f"data.source={tmp_path / 'texts'}", recipe="mae-digits")
    np.save(tmp_path / "flat.npy", np.zeros((8, 8)))
    assert "[N, H, W]" in refused(cli, tmp_path, f"data.source={tmp_path / 'flat.npy'}")
    np.save(tmp_path / "ints.npy", np.zeros((3, 8, 8), np.int64))
    assert "data.white" in refused(cli, tmp_path, f"data.source={tmp_path / 'ints.npy'}")
    np.save(tmp_path / "few.npy", np.zeros(2, np.int64))
    np.save(tmp_path / "ok.npy", np.zeros((3, 8, 8)))
    assert "one per example" in refused(cli, tmp_path, f"data.source={tmp_path / 'ok.npy'}",
                                        f"data.labels={tmp_path / 'few.npy'}")
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    Image.fromarray(eight_bit(LEVELS)).save(mixed / "a" / "1.png")
    Image.fromarray(eight_bit(OTHER)).save(mixed / "2.png")
    assert "both in class subfolders and directly inside" in refused(cli, tmp_path, f"data.source={mixed}")
    many = tmp_path / "many"
    for c in range(11):
        (many / f"c{c}").mkdir(parents=True)
        Image.fromarray(eight_bit((LEVELS + c) % 17)).save(many / f"c{c}" / "x.png")
    assert "11 classes" in refused(cli, tmp_path, f"data.source={many}")


def test_spark_glyphs_read_a_folder_as_32x32_grey_and_probe_its_classes(tmp_path, cli):
    rng = np.random.default_rng(0)
    pictures = {f"{c}/{i}.png": rng.integers(0, 256, (32, 32), dtype=np.uint8) for c in "ab" for i in range(4)}
    for rel, pixels in pictures.items():
        (tmp_path / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "imgs" / rel)
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'imgs'}", recipe="spark-glyphs")
    assert data["classes"] == {"a": 4, "b": 4} and "spark_linear" in metrics and "heldout_loss" not in metrics
    from unmask.recipes import get

    recipe = get("spark-glyphs")().with_overrides([f"data.source={tmp_path / 'imgs'}"])
    images, labels = recipe.split("train")
    read = recipe.settings.data.read(size=(32, 32), levels=256)
    train_keys = [k for k, out in zip(read.keys, read.held_out.tolist(), strict=True) if not out]
    assert images.shape == (len(train_keys), 1, 32, 32)
    for key, image in zip(train_keys, images, strict=True):  # 256 levels at 32x32: every pixel as written
        assert torch.equal((image[0] * 255).round().to(torch.uint8), torch.from_numpy(pictures[key]))
