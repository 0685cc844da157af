"""Recipe `mae-digits`: registered with typed settings, every variant trains and reloads, the teacher
of mr-mae / maskalign is trained in RUN/teacher or read from another run, the command line trains,
evaluates and samples; the slow test checks the claim that MAE features beat the same encoder at
random init by >= 5 points of 10-shot linear probe."""

import json

import pytest
import torch

from conftest import merged
from unmask.cli import main
from unmask.errors import UnmaskError
from unmask.recipes import get, load_run
from unmask.recipes.mae_digits import MAEDigits, images
from unmask.recipes.run import Run
from unmask.train.checkpoint import find_checkpoint, load_checkpoint

TINY = ["train.steps=2", "train.warmup=1", "train.batch_size=16", "model.dim=16", "model.depth=1", "model.heads=2",
        "model.decoder_dim=8", "model.decoder_depth=1", "eval.probe_draws=1"]


def tiny(*more: str) -> MAEDigits:
    return MAEDigits().with_overrides(merged(TINY, *more))


def test_registered_with_typed_settings():
    assert get("mae-digits") is MAEDigits
    with pytest.raises(UnmaskError, match="objective.variant='bert' is not allowed"):
        MAEDigits().with_overrides(["objective.variant=bert"])
    with pytest.raises(UnmaskError, match="objective.masker='pink' is not allowed"):
        MAEDigits().with_overrides(["objective.masker=pink"])
    with pytest.raises(UnmaskError, match="own masks"):
        MAEDigits().with_overrides(["objective.variant=hpm", "objective.masker=green"])
    s = MAEDigits().settings  # the defaults of the recipe before sections
    assert (s.train.steps, s.train.batch_size, s.train.lr, s.train.warmup, s.train.weight_decay) == \
        (1000, 128, 1e-3, 100, 0.05)
    assert (s.model.patch, s.model.dim, s.model.decoder_dim, s.model.decoder_depth) == (2, 128, 64, 2)
    assert (s.objective.variant, s.objective.ratio, s.objective.norm_pix, s.eval.probe_draws) == ("mae", 0.75, True, 5)
    assert tiny("model.decoder_depth=0").settings.model.decoder_depth == 0


def test_build_does_not_touch_the_global_rng():
    state = torch.random.get_rng_state()
    for variant in ("mae", "maskalign"):
        tiny(f"objective.variant={variant}").objective()
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("variant", ["mae", pytest.param("mr-mae", marks=pytest.mark.slow)])
def test_train_evaluate_and_reload(variant, tmp_path):
    recipe = tiny(f"objective.variant={variant}")
    metrics = recipe.train(Run(tmp_path, progress=False))
    for prefix in ("mae_", "random_init_", "pixels_"):
        assert 0.0 <= metrics[prefix + "linear_few"] <= 1.0
        assert metrics[prefix + "linear_few_std"] == 0.0  # one draw
    assert metrics["few_shot_gain_over_random_init"] == pytest.approx(
        metrics["mae_linear_few"] - metrics["random_init_linear_few"])
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    loaded = load_run(tmp_path)
    assert loaded.recipe.settings == recipe.settings
    assert loaded.objective.features(images("test")[:3]).shape == (3, 16, 16)
    if variant == "mr-mae":  # the teacher trained first and rides along, frozen, in the checkpoint
        assert load_checkpoint(find_checkpoint(tmp_path / "teacher"))[1]["role"] == "teacher"
        assert not any(p.requires_grad for p in loaded.objective.teacher.parameters())


def test_report_declares_probe_rows_against_random_init(tmp_path):
    recipe = tiny()
    keys = [f"{p}{s}" for p in ("mae_", "random_init_", "pixels_") for s in ("linear", "linear_few", "knn", "knn_few")]
    metrics = {k: 0.5 for k in keys} | {f"{k}_std": 0.01 for k in keys if k.endswith("few")}
    metrics |= {"mae_linear_few": 0.7, "few_shot_gain_over_random_init": 0.2}
    Run(tmp_path).write_results(metrics, recipe.report(metrics))
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# mae-digits: probes of frozen mae features")
    assert ("| mae, pretrained: linear, 10-shot | 0.7000 +- 0.0100 | 0.5000 (random_init_linear_few) | higher | yes |"
            in text)
    assert "| same encoder, random init: kNN, all labels | 0.5000 |  |  |  |" in text
    assert "| raw pixels: linear, all labels | 0.5000 |" in text
    assert "mean +- std over 1 draws" in text


def test_teacher_is_trained_in_run_teacher_or_read_from_teacher_run(tmp_path):
    recipe = tiny("objective.variant=maskalign")
    data = recipe.training_data(Run(tmp_path))
    student = recipe.objective()
    recipe.prepare(Run(tmp_path / "a", progress=False), student, data)
    plain = recipe.plain()
    teacher = plain.load(Run(tmp_path / "a" / "teacher"), role="teacher").model.encoder
    assert all(torch.equal(a, b) for a, b in zip(student.teacher.state_dict().values(),
                                                  teacher.state_dict().values(), strict=True))
    untrained = plain.objective().model.encoder.state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in teacher.state_dict().items())

    # a teacher_run is read, not trained again
    plain.fit(Run(tmp_path / "plain", progress=False), plain.objective(), data)
    from_run = tiny("objective.variant=mr-mae", f"objective.teacher_run={tmp_path / 'plain'}")
    student = from_run.objective()
    from_run.prepare(Run(tmp_path / "b"), student, data)
    assert not (tmp_path / "b" / "teacher").exists()
    expected = load_run(tmp_path / "plain").objective.model.encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in student.teacher.state_dict().items())
    wider = MAEDigits().with_overrides(merged(TINY, "model.dim=32", "objective.variant=mr-mae",
                                               f"objective.teacher_run={tmp_path / 'plain'}"))
    with pytest.raises(UnmaskError, match="another model configuration"):
        wider.prepare(Run(tmp_path / "c"), wider.objective(), data)


def test_command_line_trains_evaluates_and_samples(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "mae-digits", *TINY, "--out", str(run), "--no-progress"]) == 0
    for name in ("metrics.json", "report.md", "metrics.csv"):
        assert (run / name).is_file(), name
    assert main(["eval", str(run), "eval.probe_draws=2", "eval.baselines=false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert "mae_linear_few" in metrics and "random_init_linear_few" not in metrics
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {tmp_path / 'x.png'}" in capsys.readouterr().out


def test_a_run_with_the_flat_settings_of_before_sections_loads(tmp_path):
    from unmask.config import to_dict
    from unmask.train import save_checkpoint

    recipe = tiny("objective.variant=lut", "objective.masker=block", "eval.probe_draws=3")
    flat = {k: v for section in to_dict(recipe.settings).values() for k, v in section.items()}
    from unmask.config import keys

    assert len(flat) == len(keys(recipe.settings))  # every leaf name is unique, so each finds its one dotted key
    config = {"recipe": "mae-digits", "config": flat, "model": recipe.model_dict()}
    save_checkpoint(tmp_path, 2, {"model": recipe.objective().state_dict()}, config, {})
    with pytest.warns(UserWarning, match="upgraded"):
        assert load_run(tmp_path).recipe.settings == recipe.settings


@pytest.mark.parametrize("argv,needle", [
    (["train.stepz=3"], "unknown key 'train.stepz'; did you mean 'train.steps'?"),
    (["train.lr=0"], "train.lr=0.0 is out of range"),
    (["model.patch=3"], "model.patch=3 is not allowed; model.patch must be one of 1, 2, 4"),
    (["model.decoder_dim=wide"], "model.decoder_dim='wide' is not an integer"),
    (["objective.ratio=0.99"], "objective.ratio=0.99 is out of range; objective.ratio must be in [0.0, 0.95]"),
    (["objective.norm_pix=maybe"], "objective.norm_pix='maybe' is not a boolean"),
    (["objective.variant=selective", "objective.masker=red"], "chooses its own masks"),
    (["eval.probe_draws=0"], "eval.probe_draws=0 is out of range; eval.probe_draws must be >= 1"),
    (["data.points=3"], "unknown key 'data.points'"),
])
def test_bad_settings_are_one_line_and_exit_2(argv, needle, capsys):
    assert main(["train", "mae-digits", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


@pytest.mark.slow
def test_mae_features_beat_random_init_by_five_points(tmp_path):
    torch.set_num_threads(1)
    metrics = MAEDigits().train(Run(tmp_path, progress=False))
    assert metrics["mae_linear_few"] - metrics["random_init_linear_few"] >= 0.05
