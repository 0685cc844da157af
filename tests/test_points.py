"""Point clouds: shapes, FPS / kNN / Chamfer against brute force, twin masks, the Point-MAE, Point-BERT
and Point-CMAE losses, and the `pointmae-shapes` recipe."""

import json
from pathlib import Path

import pytest
import torch

from conftest import merged
from unmask.cli import main
from unmask.data import points as shapes
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.masking import RandomMask, TwinMask
from unmask.nn.chamfer import chamfer_l2
from unmask.nn.mae import MAEConfig
from unmask.nn.point_groups import farthest_point_sample, gather_points, group_points, knn
from unmask.nn.point_mae import PointEncoder
from unmask.nn.point_tokenizer import PointTokenizer, kmeans
from unmask.objectives.point_bert import PointBERT
from unmask.objectives.point_cmae import PointCMAE, co_hidden_contrast, place
from unmask.objectives.point_mae import PointMAE
from unmask.recipes import get, load_run
from unmask.recipes.pointmae_shapes import PointMAEShapes
from unmask.recipes.run import Run


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# shapes ------------------------------------------------------------------------------------------
def test_shapes_are_deterministic_under_a_seed():
    a = shapes.load("train", per_class=2, points=64, seed=3)
    b = shapes.load("train", per_class=2, points=64, seed=3)
    assert torch.equal(a.points, b.points) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.points, shapes.load("train", per_class=2, points=64, seed=4).points)
    assert not torch.equal(a.points, shapes.load("test", per_class=2, points=64, seed=3).points)
    assert a.points.shape == (2 * len(shapes.SHAPES), 64, 3)
    assert a.labels.tolist() == [c for c in range(len(shapes.SHAPES)) for _ in range(2)]
    radius = a.points.norm(dim=-1).amax(dim=1)  # normalised to radius 1, then jittered by std 0.01
    assert ((radius - 1).abs() < 0.05).all()


def test_surface_points_lie_on_their_shapes():
    g = gen()
    x = {s: shapes.surface(s, 500, g) for s in shapes.SHAPES}
    assert torch.allclose(x["sphere"].norm(dim=1), torch.ones(500, dtype=torch.float64))
    assert torch.allclose(x["cube"].abs().amax(dim=1), torch.ones(500, dtype=torch.float64))
    assert torch.allclose(x["octahedron"].abs().sum(dim=1), torch.ones(500, dtype=torch.float64))
    big, small = shapes.TORUS_RADII
    t = x["torus"]
    assert torch.allclose((t[:, :2].norm(dim=1) - big) ** 2 + t[:, 2] ** 2, torch.full((500,), small**2,
                                                                                         dtype=torch.float64))
    c = x["cylinder"]
    on_side = torch.isclose(c[:, :2].norm(dim=1), torch.ones(500, dtype=torch.float64))
    on_cap = torch.isclose(c[:, 2].abs(), torch.ones(500, dtype=torch.float64)) & (c[:, :2].norm(dim=1) <= 1)
    assert (on_side | on_cap).all() and on_side.any() and on_cap.any()
    x0, y0, z0 = x["tetrahedron"].unbind(1)  # the four faces: each form >= -1 inside, = -1 on its face
    forms = torch.stack([x0 + y0 + z0, x0 - y0 - z0, -x0 + y0 - z0, -x0 - y0 + z0], 1)
    assert torch.allclose(forms.amin(1), torch.full((500,), -1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        shapes.surface("blob", 10, g)


# FPS, kNN, groups, Chamfer -----------------------------------------------------------------------
def brute_fps(x: torch.Tensor, count: int, start: int = 0) -> list[int]:
    picks = [start]
    while len(picks) < count:
        far = [min(float(((x[i] - x[j]) ** 2).sum()) for j in picks) for i in range(len(x))]
        picks.append(max(range(len(x)), key=lambda i: far[i]))
    return picks


def test_fps_matches_brute_force_and_picks_farthest_first():
    x = torch.randn(3, 40, 3, generator=gen(), dtype=torch.float64)
    idx = farthest_point_sample(x, 12)
    for b in range(3):
        picks = idx[b].tolist()
        assert picks == brute_fps(x[b], 12)
        assert len(set(picks)) == 12
        gaps = [min(float(((x[b, p] - x[b, q]) ** 2).sum()) for q in picks[:i]) for i, p in enumerate(picks) if i]
        assert all(u >= v for u, v in zip(gaps, gaps[1:], strict=False))  # each pick is no nearer than the next
    assert (farthest_point_sample(x, 5, start=7)[:, 0] == 7).all()
    assert farthest_point_sample(x, 5, start=7)[1].tolist() == brute_fps(x[1], 5, start=7)
    with pytest.raises(ValueError, match="count"):
        farthest_point_sample(x, 41)


def test_knn_matches_brute_force():
    x = torch.randn(2, 50, 3, generator=gen(1), dtype=torch.float64)
    queries = x[:, :6] + 0.1 * torch.randn(2, 6, 3, generator=gen(2), dtype=torch.float64)
    idx = knn(queries, x, 7)
    for b in range(2):
        for q in range(6):
            ref = sorted(range(50), key=lambda i: float(((x[b, i] - queries[b, q]) ** 2).sum()))[:7]
            assert idx[b, q].tolist() == ref


def test_groups_are_nearest_points_relative_to_fps_centres():
    x = torch.randn(2, 64, 3, generator=gen(3))
    groups = group_points(x, 8, 5)
    assert groups.points.shape == (2, 8, 5, 3) and groups.centres.shape == (2, 8, 3)
    assert torch.equal(groups.centres, gather_points(x, farthest_point_sample(x, 8)))
    assert torch.equal(groups.points[:, :, 0], torch.zeros(2, 8, 3))  # a centre is its own nearest point
    members = gather_points(x, knn(groups.centres, x, 5))
    assert torch.allclose(groups.points + groups.centres.unsqueeze(2), members)


def test_chamfer_equals_a_hand_computation():
    pred = torch.tensor([[0.0, 0, 0], [2, 0, 0]])
    target = torch.tensor([[0.0, 0, 0], [0, 1, 0], [2, 2, 0]])
    # pred -> target: 0 and 4 (mean 2); target -> pred: 0, 1 and 4 (mean 5/3)
    assert chamfer_l2(pred, target).item() == pytest.approx(2 + 5 / 3)
    assert chamfer_l2(target, pred).item() == pytest.approx(2 + 5 / 3)  # symmetric
    sets = torch.randn(4, 6, 3, generator=gen(4))
    assert torch.equal(chamfer_l2(sets, sets), torch.zeros(4))
    assert torch.equal(chamfer_l2(sets, sets[:, torch.randperm(6, generator=gen(5))]), torch.zeros(4))
    other = torch.randn(4, 9, 3, generator=gen(6))
    shuffled = other[:, torch.randperm(9, generator=gen(7))]
    assert torch.allclose(chamfer_l2(sets, other), chamfer_l2(sets, shuffled))
    assert (chamfer_l2(sets, other) > 0).all()
    with pytest.raises(ValueError):
        chamfer_l2(sets, other[:2])


# twin masks --------------------------------------------------------------------------------------
def test_twin_masks_share_exactly_the_set_count():
    layout, g = Layout.seq(64), gen(8)
    first = RandomMask()(layout, 200, ratio=0.6, generator=g)  # 38 hidden
    for overlap, shared in [(0.0, 12), (0.25, 12), (0.5, 19), (0.6, 23), (1.0, 38)]:  # at least 2*38 - 64 = 12
        second = TwinMask(overlap=overlap)(layout, 200, ratio=0.6, generator=g, first=first)
        assert (second.sum(1) == 38).all()
        assert ((first & second).sum(1) == shared).all()
    assert torch.equal(TwinMask(overlap=1.0)(layout, 200, ratio=0.6, generator=g, first=first), first)
    few = RandomMask()(layout, 50, ratio=0.25, generator=g)
    apart = TwinMask(overlap=0.0)(layout, 50, ratio=0.25, generator=g, first=few)
    assert not (few & apart).any() and (apart.sum(1) == 16).all()


def test_independent_twin_masks_overlap_as_independent_masks_do():
    layout = Layout.seq(64)
    first = RandomMask()(layout, 4000, ratio=0.6, generator=gen(9))
    second = TwinMask()(layout, 4000, ratio=0.6, generator=gen(10), first=first)
    assert (second.sum(1) == 38).all()
    # hypergeometric: mean 38 * 38 / 64 = 22.56, std of the mean over 4000 rows about 0.03
    assert (first & second).sum(1).double().mean().item() == pytest.approx(38 * 38 / 64, abs=0.15)
    other_first = RandomMask()(layout, 4000, ratio=0.6, generator=gen(11))
    assert torch.equal(TwinMask()(layout, 4000, ratio=0.6, generator=gen(10), first=other_first), second)


def test_twin_mask_rejects_bad_input():
    layout = Layout.seq(8)
    with pytest.raises(ValueError, match="overlap"):
        TwinMask(overlap=1.5)
    with pytest.raises(ValueError, match="first"):
        TwinMask()(layout, 2, ratio=0.5)
    with pytest.raises(ValueError, match="first"):
        TwinMask()(layout, 2, ratio=0.5, first=torch.zeros(2, 7, dtype=torch.bool))


# objectives --------------------------------------------------------------------------------------
def tiny_encoder(hide="drop", groups=8, size=4):
    cfg = MAEConfig(image_size=(groups,), patch=1, channels=3, dim=16, depth=1, heads=2, decoder_dim=8,
                    decoder_depth=1, decoder_heads=2, cls_token=False, hide=hide)
    return PointEncoder(cfg, size, width=4)


def test_point_mae_loss_ignores_visible_groups():
    torch.manual_seed(0)
    obj = PointMAE(tiny_encoder())
    groups = obj.encoder.group(torch.randn(3, 64, 3, generator=gen(12)))
    mask = obj.draw_mask(3, gen(13))
    assert (mask.sum(1) == round(0.6 * 8)).all()
    rec = obj.reconstruction(groups, mask)
    ids = rec.encoded.index.ids_hidden
    by_hand = torch.stack([chamfer_l2(rec.decoded.points[b, j], groups.points[b, ids[b, j]])
                           for b in range(3) for j in range(ids.shape[1])]).mean()
    assert rec.loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    visible_changed = torch.where(mask[..., None, None], groups.points, groups.points + 5.0)
    assert torch.equal(obj.reconstruction(groups, mask, target=visible_changed).loss, rec.loss)
    hidden_changed = torch.where(mask[..., None, None], groups.points + 5.0, groups.points)
    assert obj.reconstruction(groups, mask, target=hidden_changed).loss > rec.loss


def test_point_mae_encoder_never_reads_hidden_groups():
    torch.manual_seed(0)
    enc = tiny_encoder().eval()  # BatchNorm on running statistics: each group's token is its own
    groups = enc.group(torch.randn(2, 64, 3, generator=gen(14)))
    mask = RandomMask()(enc.layout, 2, ratio=0.6, generator=gen(15))
    moved = groups._replace(points=torch.where(mask[..., None, None], groups.points * 3 + 1, groups.points))
    assert torch.equal(enc(groups, mask).tokens, enc(moved, mask).tokens)


def test_kmeans_and_tokenizer_find_separated_clusters():
    blobs = torch.cat([torch.randn(30, 9, generator=gen(i), dtype=torch.float64) * 0.01 + 5 * i for i in range(3)])
    centroids = kmeans(blobs, 3, generator=gen(16))
    codes = torch.cdist(blobs, centroids).argmin(1).view(3, 30)
    assert (codes == codes[:, :1]).all() and len(set(codes[:, 0].tolist())) == 3
    tok = PointTokenizer(4)
    with pytest.raises(UnmaskError, match="fit"):
        tok(torch.randn(2, 5, 3))
    groups = group_points(torch.randn(6, 64, 3, generator=gen(17)), 8, 5).points
    codes = tok.fit(groups, gen(18))(groups)
    assert codes.shape == (6, 8) and 0 <= codes.min() and codes.max() < 4
    assert torch.equal(codes, tok(groups))


def test_point_bert_loss_reads_codes_of_hidden_groups_only():
    torch.manual_seed(0)
    enc = tiny_encoder("replace")
    groups = enc.group(torch.randn(3, 64, 3, generator=gen(19)))
    obj = PointBERT(enc, PointTokenizer(5).fit(groups.points, gen(20)))
    mask = obj.draw_mask(3, gen(21))
    assert 2 <= mask.sum(1)[0] <= 4 and (mask.sum(1) == mask.sum(1)[0]).all()  # round([0.25, 0.45] * 8)
    codes = obj.tokenizer(groups.points)
    loss, _ = obj.prediction(groups, mask, codes)
    assert torch.equal(obj.prediction(groups, mask, torch.where(mask, codes, (codes + 1) % 5))[0], loss)
    assert not torch.equal(obj.prediction(groups, mask, torch.where(mask, (codes + 1) % 5, codes))[0], loss)
    with pytest.raises(ValueError, match="replace"):
        PointBERT(tiny_encoder("drop"), PointTokenizer(5))


def test_point_cmae_contrast_reads_groups_hidden_in_both_views():
    f1, f2 = torch.randn(2, 8, 5, generator=gen(22)), torch.randn(2, 8, 5, generator=gen(23))
    both = torch.zeros(2, 8, dtype=torch.bool)
    both[0, [1, 4]] = both[1, 6] = True
    by_hand = [1 - torch.dot(f1[b, i], f2[b, i]) / (f1[b, i].norm() * f2[b, i].norm()) for b, i in
               [(0, 1), (0, 4), (1, 6)]]
    value = co_hidden_contrast(f1, f2, both)
    assert value.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-5)
    assert torch.equal(co_hidden_contrast(torch.where(both[..., None], f1, f1 * -3), f2, both), value)
    assert co_hidden_contrast(f1, f1 * 2, both).item() == pytest.approx(0.0, abs=1e-6)
    ids = torch.tensor([[2, 5], [0, 7]])
    placed = place(f1[:, :2], ids, 8)
    assert torch.equal(placed[0, 5], f1[0, 1]) and torch.equal(placed[1, 0], f1[1, 0])
    assert placed.abs().sum() == f1[:, :2].abs().sum()


def test_point_cmae_shares_what_its_twin_mask_says():
    torch.manual_seed(0)
    points = {"points": torch.randn(4, 64, 3, generator=gen(24))}
    same = PointCMAE(tiny_encoder(), overlap=1.0)(points, gen(25)).metrics
    assert same["co_hidden"] == round(0.6 * 8)
    apart = PointCMAE(tiny_encoder(), ratio=0.25, overlap=0.0)(points, gen(25)).metrics
    assert apart["co_hidden"] == 0 and apart["contrast"] == 0.0


# recipe ------------------------------------------------------------------------------------------
TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "model.decoder_dim=8", "model.decoder_depth=1", "model.pointnet_width=4", "eval.probe_draws=1",
        "data.train_per_class=10", "data.test_per_class=2", "data.points=96", "data.groups=8", "data.group_size=8",
        "objective.codes=8"]


def test_recipe_is_registered_with_typed_settings():
    assert get("pointmae-shapes") is PointMAEShapes
    with pytest.raises(UnmaskError, match="objective.variant='pointnet' is not allowed"):
        PointMAEShapes().with_overrides(["objective.variant=pointnet"])
    with pytest.raises(UnmaskError, match="data.groups=8 and data.group_size=200 must not exceed data.points=96"):
        PointMAEShapes().with_overrides(merged(TINY, "data.group_size=200"))
    s = PointMAEShapes().settings  # the defaults of the recipe before sections
    assert (s.train.steps, s.train.batch_size, s.train.lr, s.train.warmup) == (1000, 32, 1e-3, 50)
    assert (s.data.points, s.data.groups, s.data.group_size, s.data.train_per_class, s.data.test_per_class) == \
        (1024, 32, 32, 250, 100)
    assert (s.objective.ratio, s.objective.codes, s.model.pointnet_width, s.eval.probe_draws) == (0.6, 64, 16, 5)


@pytest.mark.parametrize("variant", ["pointmae", "pointbert", "pointcmae"])
def test_recipe_trains_evaluates_and_reloads(variant, tmp_path):
    recipe = PointMAEShapes().with_overrides(TINY + [f"objective.variant={variant}"])
    metrics = recipe.train(Run(tmp_path, progress=False))
    for prefix in ("pretrained_", "random_init_"):
        assert 0.0 <= metrics[prefix + "linear_few"] <= 1.0
    assert not any(k.startswith("pixels_") for k in metrics)  # no raw-input baseline for clouds
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    loaded = load_run(Path(tmp_path))
    assert loaded.recipe.settings == recipe.settings
    clouds = shapes.load("test", per_class=1, points=96)
    assert loaded.objective.features(clouds.points).shape == (8, 8, 16)
    if variant == "pointbert":  # the codebook rides along in the checkpoint
        assert bool(loaded.objective.tokenizer.fitted)
        with pytest.raises(UnmaskError, match="does not make them"):
            recipe.sample(loaded.run, loaded.objective, 2, tmp_path / "recon.png")
    else:
        assert recipe.sample(loaded.run, loaded.objective, 2, tmp_path / "recon.png") == tmp_path / "recon.png"
        assert (tmp_path / "recon.png").read_bytes()[:4] == b"\x89PNG"


def test_recipe_command_line_trains_evaluates_and_samples(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "pointmae-shapes", *TINY, "--out", str(run), "--no-progress"]) == 0
    for name in ("metrics.json", "report.md", "metrics.csv"):
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    assert report.startswith("# pointmae-shapes: probes of frozen pointmae features")
    assert "| pointmae, pretrained: linear, 10-shot |" in report and "raw pixels" not in report
    assert main(["eval", str(run), "eval.probe_draws=2"]) == 0
    assert "few_shot_gain_over_random_init: " in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv,needle", [
    (["train.warmup=-1"], "train.warmup=-1 is out of range"),
    (["model.pointnet_width=0"], "model.pointnet_width=0 is out of range; model.pointnet_width must be >= 1"),
    (["model.dim=1.5"], "model.dim='1.5' is not an integer"),
    (["data.points=8"], "data.points=8 is out of range; data.points must be >= 16"),
    (["data.group=4"], "unknown key 'data.group'; did you mean 'data.groups'?"),
    (["data.groups=64", "data.points=32"], "data.groups=64 and data.group_size=32 must not exceed data.points=32"),
    (["objective.variant=pointnet"], "objective.variant='pointnet' is not allowed"),
    (["objective.ratio=0.01"], "objective.ratio=0.01 is out of range; objective.ratio must be in [0.05, 0.95]"),
    (["eval.probe_draws=many"], "eval.probe_draws='many' is not an integer"),
])
def test_recipe_bad_settings_are_one_line_and_exit_2(argv, needle, capsys):
    assert main(["train", "pointmae-shapes", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


@pytest.mark.slow
def test_point_mae_features_beat_random_init_by_five_points(tmp_path):
    torch.set_num_threads(1)
    metrics = PointMAEShapes().train(Run(tmp_path, progress=False))
    assert metrics["pretrained_linear_few"] - metrics["random_init_linear_few"] >= 0.05
