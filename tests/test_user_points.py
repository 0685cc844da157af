"""Users' own point clouds as `data.source` of `pointmae-shapes`: resampling that is deterministic and
keeps the file's points, the shapes' normalisation, classes from subfolders or a labels array,
counted skips in RUN/data.json, and one-line refusals. The clouds are made here, at run time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY
from unmask.data.points import normalise
from unmask.data.user_points import read_points, resample

pytestmark = pytest.mark.usefixtures("one_thread")

POINTS = 96  # TINY's data.points


def unit_cloud(n, seed, squash=(1.0, 1.0, 1.0)):
    """n points already normalised (centroid 0, farthest point at distance 1), not symmetric in x, y, z."""
    x = np.random.default_rng(seed).normal(size=(n, 3)) * np.array(squash)
    return normalise(torch.from_numpy(x)).numpy()


def make_folder(root):
    """ring/: 3 clouds, blob/: 4 clouds and 4 that are skipped. Returns {key: the cloud it must read as}
    of the clouds with exactly POINTS points."""
    (root / "ring").mkdir(parents=True)
    (root / "blob").mkdir()
    exact = unit_cloud(POINTS, 0, (3.0, 1.0, 0.2))
    np.save(root / "ring" / "exact.npy", exact * 4.0 + np.array([10.0, -2.0, 0.5]))  # moved and scaled
    np.save(root / "ring" / "many.npy", unit_cloud(300, 1))
    np.save(root / "ring" / "few.npy", unit_cloud(40, 2).astype(np.float32))
    for i in range(4):
        np.save(root / "blob" / f"b{i}.npy", unit_cloud(POINTS + i, 10 + i, (1.0, 2.0, 1.0)))
    bad = unit_cloud(POINTS, 20)
    bad[5, 2] = np.inf
    np.save(root / "blob" / "inf.npy", bad)
    np.save(root / "blob" / "flat.npy", unit_cloud(POINTS, 21)[:, :2])
    np.save(root / "blob" / "same.npy", np.ones((POINTS, 3)))
    (root / "blob" / "text.npy").write_text("no array here")
    return {"ring/exact.npy": exact}


def test_resampling_keeps_the_files_points_and_is_the_same_every_time():
    cloud = unit_cloud(300, 1)
    out = resample(cloud, POINTS, "a.npy")
    rows = [int(np.nonzero((cloud == p).all(1))[0][0]) for p in out]
    assert len(set(rows)) == POINTS and rows == sorted(rows)  # a subset, in the file's order
    assert np.array_equal(resample(cloud, POINTS, "a.npy"), out)
    assert not np.array_equal(resample(cloud, POINTS, "b.npy"), out)  # each cloud its own draw
    few = unit_cloud(40, 2)
    grown = resample(few, POINTS, "c.npy")
    assert np.array_equal(grown[:40], few) and all((few == p).all(1).any() for p in grown[40:])
    assert resample(few, 40, "c.npy") is few


def test_a_folder_reads_back_normalised_with_classes_and_counted_skips(tmp_path):
    truth = make_folder(tmp_path / "clouds")
    clouds = read_points(tmp_path / "clouds", points=POINTS)
    assert sorted(clouds.keys) == sorted(["ring/exact.npy", "ring/many.npy", "ring/few.npy"]
                                         + [f"blob/b{i}.npy" for i in range(4)])
    exact = clouds.points[clouds.keys.index("ring/exact.npy")].numpy()
    assert np.allclose(exact, truth["ring/exact.npy"], atol=1e-6)  # moved and scaled back, axes unswapped
    assert np.allclose(clouds.points.mean(1).numpy(), 0, atol=1e-5)
    assert np.allclose(clouds.points.norm(dim=-1).amax(1).numpy(), 1, atol=1e-6)
    assert clouds.classes == ("blob", "ring")
    assert [clouds.classes[i] for i in clouds.labels.tolist()] == [k.split("/")[0] for k in clouds.keys]
    assert dict(clouds.stats.skips.counts) == {"non-finite values": 1, "not an array of points [P, 3]": 1,
                                               "all points at one place": 1, "not a .npy array": 1}
    again = read_points(tmp_path / "clouds", points=POINTS)
    assert again.held_out.tolist() == clouds.held_out.tolist() and bool(again.points.equal(clouds.points))


def train(cli, out, *overrides):
    ran = cli("train", "pointmae-shapes", "--out", out, "--no-progress", *TINY["pointmae-shapes"], *overrides)
    assert ran.code == 0, ran.err
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "data.json").read_text())


def test_pointmae_trains_on_a_folder_and_probes_its_classes(tmp_path, cli):
    make_folder(tmp_path / "clouds")
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'clouds'}")
    assert (data["files"], data["examples"], data["skipped"]) == (11, 7, 4)
    assert data["skipped_by_reason"]["non-finite values"]["examples"] == [str(tmp_path / "clouds/blob/inf.npy")]
    assert data["classes"] == {"blob": 4, "ring": 3} and data["points"] == POINTS
    assert "pretrained_linear" in metrics and "heldout_loss" not in metrics
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Data: 7 examples from 11 files" in report and "(2 classes)" in report


def test_an_array_with_labels_and_one_without(tmp_path, cli):
    clouds = np.stack([unit_cloud(POINTS, i) for i in range(6)])
    clouds[3, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", clouds)
    np.save(tmp_path / "y.npy", np.array(["cup", "jar", "cup", "jar", "jar", "cup"]))
    read = read_points(tmp_path / "x.npy", points=POINTS, labels=str(tmp_path / "y.npy"))
    assert read.keys == ("x.npy#0", "x.npy#1", "x.npy#2", "x.npy#4", "x.npy#5")
    assert read.labels.tolist() == [0, 1, 0, 1, 0] and read.classes == ("cup", "jar")
    assert np.allclose(read.points[3].numpy(), clouds[4], atol=1e-6)
    metrics, data = train(cli, tmp_path / "run", f"data.source={tmp_path / 'x.npy'}",
                          f"data.labels={tmp_path / 'y.npy'}")
    assert (data["files"], data["examples"], data["skipped"]) == (1, 5, 1)
    assert data["skipped_by_reason"] == {"non-finite values": {"count": 1, "examples": [f"{tmp_path / 'x.npy'}[3]"]}}
    assert data["classes"] == {"cup": 3, "jar": 2} and "pretrained_linear" in metrics
    metrics, _ = train(cli, tmp_path / "bare", f"data.source={tmp_path / 'x.npy'}")
    assert list(metrics) == ["heldout_loss"] and metrics["heldout_loss"] > 0
    assert "nothing to probe" in (tmp_path / "bare" / "report.md").read_text()


def refused(cli, tmp_path, *overrides):
    ran = cli("train", "pointmae-shapes", "--out", tmp_path / "never", "--no-progress", *TINY["pointmae-shapes"],
              *overrides)
    assert ran.code == 2, ran
    assert ran.err.startswith("unmask: error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err


def test_clouds_that_cannot_be_used_are_refused_in_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    assert "no data files" in refused(cli, tmp_path, f"data.source={tmp_path / 'empty'}")
    np.save(tmp_path / "rank.npy", np.zeros((4, POINTS)))
    assert "[N, P, 3]" in refused(cli, tmp_path, f"data.source={tmp_path / 'rank.npy'}")
    (tmp_path / "junk").mkdir()
    np.save(tmp_path / "junk" / "a.npy", np.full((POINTS, 3), np.nan))
    (tmp_path / "junk" / "b.npy").write_text("text")
    err = refused(cli, tmp_path, f"data.source={tmp_path / 'junk'}")
    assert "none of the 2 files" in err and "non-finite values: 1" in err
    np.save(tmp_path / "labels.npy", np.arange(3))
    np.save(tmp_path / "four.npy", np.stack([unit_cloud(POINTS, i) for i in range(4)]))
    assert "one per example" in refused(cli, tmp_path, f"data.source={tmp_path / 'four.npy'}",
                                        f"data.labels={tmp_path / 'labels.npy'}")
