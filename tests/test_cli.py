import json
import re
import subprocess
import sys

import pytest
import torch

from unmask.cli import main


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "digitz"], "unknown recipe 'digitz'; did you mean 'digits'?"),
        (["train", "digits", "train.step=5"], "unknown key 'train.step'; did you mean 'train.steps'?"),
        (["train", "digits", "steps=5"], "unknown key 'steps'; did you mean 'train.steps'?"),
        (["train", "digits", "model.dims=5"], "unknown key 'model.dims'; did you mean 'model.dim'?"),
        (["train", "digits", "train.steps=five"], "train.steps='five' is not an integer"),
        (["train", "digits", "train.lr=-1"], "train.lr=-1.0 is out of range; train.lr must be > 0"),
        (["train", "digits", "train.steps=0"], "train.steps=0 is out of range; train.steps must be >= 1"),
        (["train", "digits", "train.ema=1.5"], "train.ema=1.5 is out of range; train.ema must be in [0.0, 1.0]"),
        (["train", "digits", "objective.schedule=cosin"],
         "objective.schedule='cosin' is not allowed; objective.schedule must be one of"),
        (["train", "digits", "sampler.name=llada"], "sampler.name='llada' is not allowed"),
        (["train", "digits", "eval.n_samples=1.5"], "eval.n_samples='1.5' is not an integer"),
        (["train", "digits", "train.lr=nan"], "train.lr=nan is not a finite number"),
        (["train", "digits", "train.steps"], "override 'train.steps' is not of the form key=value"),
        (["recipes", "digitz"], "unknown recipe 'digitz'"),
        (["train", "digits", "--bogus"], "unrecognized arguments: --bogus"),
        (["eval", "no/such/run"], "run folder no/such/run does not exist"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask: error: ")
    assert needle in err


def test_eval_of_a_folder_without_checkpoints(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err


def test_recipes_lists_recipes_and_one_recipes_settings_tree(capsys):
    from unmask.recipes import RECIPES, get

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}:" in out for name in RECIPES) and "P59" in out
    assert main(["recipes", "digits"]) == 0
    out = capsys.readouterr().out
    steps = get("digits")().settings.train.steps
    assert f"    train.steps={steps}  [>= 1]  optimizer steps" in out
    for head in ("[train]", "[model]", "[objective]", "[sampler]", "[eval]"):
        assert f"  {head}\n" in out
    assert "    sampler.name=ancestral  [one of maskgit, ancestral, first-hitting]" in out


def test_process_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "unmask", "train", "digits", "model.heads=x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model.heads='x' is not an integer" in proc.stderr


def test_tiny_digits_run_end_to_end(digits_run, tmp_path, cli):
    """Train a few steps, evaluate, sample: every promised file appears."""
    for name in ["metrics.json", "samples.png", "inpaint.png", "report.md", "metrics.csv"]:
        assert (digits_run / name).is_file(), name
    ran = cli("eval", digits_run, "sampler.name=first-hitting", "eval.n_samples=10")
    assert ran.code == 0, ran.err
    ran = cli("sample", digits_run, "--n", "7", "--out", tmp_path / "s.png")
    assert ran.code == 0 and (tmp_path / "s.png").is_file() and f"wrote {tmp_path / 's.png'}" in ran.out


@pytest.mark.parametrize("override", ["model.dim=32", "train.lr=0.1", "objective.label_weight=0.5"])
def test_eval_and_sample_change_only_sampler_and_eval_settings(digits_run, cli, override):
    for command in ("eval", "sample"):
        ran = cli(command, digits_run, override)
        assert ran.code == 2
        assert ran.err == f"unmask: error: {override.split('=')[0]} cannot change here; only sampler.*, eval.* can\n"


def test_sample_writes_the_recipes_format_and_refuses_another(digits_run, tmp_path, cli):
    ran = cli("sample", digits_run, "--n", "3", "--out", tmp_path / "s.txt")
    assert ran.code == 2 and "writes .png files, not .txt" in ran.err
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "s.txt").exists()
    ran = cli("sample", digits_run, "--n", "3", "--out", tmp_path / "s")
    assert ran.code == 0 and (tmp_path / "s.png").is_file()
    ran = cli("sample", digits_run, "--n", "2")
    assert ran.code == 0 and (digits_run / "samples.png").is_file()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "digits", "train.micro_bach=4"],
         "unknown key 'train.micro_bach'; did you mean 'train.micro_batch'?"),
        (["train", "digits", "train.parallel=mpi"],
         "train.parallel='mpi' is not allowed; train.parallel must be one of ddp, fsdp"),
        (["train", "digits", "train.precision=fp16"],
         "train.precision='fp16' is not allowed; train.precision must be one of auto, bf16"),
        (["train", "digits", "train.beta2=1"], "train.beta2=1.0 is out of range; train.beta2 must be in [0.0, 1.0)"),
        (["train", "digits", "train.min_lr_ratio=1.5"], "train.min_lr_ratio=1.5 is out of range"),
        (["train", "digits", "train.keep=0"], "train.keep=0 is out of range; train.keep must be >= 1"),
        (["train", "digits", f"train.seed={2**63}"], f"train.seed={2**63} is too large"),
        (["train", "digits", "model.dim=36", "model.heads=5"],
         "the settings do not build a model: width 36 is not divisible by 5"),
    ],
)
def test_trainer_settings_and_settings_that_do_not_fit_are_checked(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["train", "digits", "--out", str(tmp_path / "f")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def tiny_run(root, steps=(1, 2)):
    """A digits run folder with checkpoints at `steps` (untrained weights): fast to evaluate."""
    from conftest import TINY
    from unmask.recipes import get
    from unmask.train import save_checkpoint

    recipe = get("digits")().with_overrides(TINY["digits"])
    weights = recipe.objective().state_dict()
    return [save_checkpoint(root, s, {"model": weights}, recipe.run_config(), {}, keep=5) for s in steps]


def test_a_run_of_an_older_layout_with_flat_settings_is_upgraded_with_a_warning(tmp_path, cli):
    from conftest import TINY
    from unmask.config import to_dict
    from unmask.recipes import get
    from unmask.train import save_checkpoint

    recipe = get("digits")().with_overrides(TINY["digits"])
    s = to_dict(recipe.settings)
    flat = {**{k: v for k, v in s["train"].items() if k in ("steps", "batch_size", "lr", "seed")},
            **s["model"], **s["objective"], "n_samples": 10, "sampler": "ancestral", "sampler_steps": 2}
    config = {"recipe": "digits", "config": flat, "model": recipe.model_dict()}
    save_checkpoint(tmp_path / "old", 3, {"model": recipe.objective().state_dict()}, config, {})
    ran = cli("sample", tmp_path / "old", "--n", "2", "--out", tmp_path / "s.png")
    assert ran.code == 0, ran.err
    assert "settings of an older run upgraded to sections" in ran.err
    from unmask.recipes import load_run

    with pytest.warns(UserWarning, match="upgraded"):
        loaded = load_run(tmp_path / "old")
    assert loaded.recipe.settings.sampler.name == "ancestral" and loaded.recipe.settings.sampler.steps == 2
    assert loaded.recipe.settings.eval.n_samples == 10


def test_a_corrupted_newest_checkpoint_is_one_warning_line_and_the_previous_one_is_used(tmp_path, capsys):
    ckpts = tiny_run(tmp_path / "run")
    raw = bytearray((ckpts[-1] / "model.safetensors").read_bytes())
    raw[-3] ^= 0x01
    (ckpts[-1] / "model.safetensors").write_bytes(bytes(raw))
    assert main(["sample", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "s.png")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"unmask: warning: skipping checkpoint {ckpts[-1]}: model.safetensors does not match its checksum"]
    assert (tmp_path / "s.png").is_file()


def test_a_run_whose_only_checkpoint_is_corrupted_is_an_error_naming_it(tmp_path, capsys):
    (ckpt,) = tiny_run(tmp_path / "run", steps=(4,))
    (ckpt / "config.json").write_text("{}")
    assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    size = json.loads((ckpt / "state.json").read_text())["sizes"]
    assert err == f"unmask: error: no usable checkpoint in {tmp_path / 'run' / 'checkpoints'}: step_00000004: " \
                  f"config.json has 2 bytes, not the {size['config.json']} state.json lists\n"


def test_a_diverging_run_stops_with_one_line_naming_the_step_and_keeps_its_checkpoint(tmp_path, capsys):
    from unmask.train.checkpoint import latest_checkpoint, load_checkpoint

    args = ["train", "digits", "--out", str(tmp_path), "--no-progress", "train.steps=6", "model.dim=16",
            "model.depth=1", "model.heads=2", "train.batch_size=16", "train.warmup=0", "train.lr=1e6",
            "train.checkpoint_every=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"unmask: error: the (loss|gradient norm) is (nan|inf) at step (\d); training stopped, the last "
                     r"good checkpoint \S+step_0000000\3 is kept \(try a lower lr\)", err), err
    ckpt = latest_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpt)[0]["model"].values())


def test_masks_gallery_command(tmp_path, capsys):
    out = tmp_path / "masks.png"
    assert main(["masks", "--out", str(out), "--ratio", "0.6"]) == 0
    assert out.is_file() and out.stat().st_size > 10_000
    assert main(["masks", "--out", str(out), "--ratio", "1.5"]) == 2
    assert "--ratio must lie in [0, 1]" in capsys.readouterr().err


def test_trainer_settings_from_the_command_line_reach_the_run_and_only_it(tmp_path, cli):
    """`train.keep=1` keeps one checkpoint of this run; nothing global is left for the next one."""
    from conftest import tiny
    from unmask.recipes import get

    ran = cli("train", "digits", "--out", tmp_path / "a", "--no-progress",
              *tiny("digits", "train.steps=3", "train.checkpoint_every=1", "train.keep=1", "train.micro_batch=8"))
    assert ran.code == 0, ran.err
    assert [p.name for p in (tmp_path / "a" / "checkpoints").iterdir()] == ["step_00000003"]
    state = json.loads((tmp_path / "a" / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert (state["train"]["keep"], state["train"]["micro_batch"]) == (1, 8)
    assert get("digits")().settings.train.keep == 2  # the defaults are untouched
    ran = cli("train", "digits", "--out", tmp_path / "b", "--no-progress",
              *tiny("digits", "train.steps=3", "train.checkpoint_every=1"))
    assert ran.code == 0, ran.err
    assert len(list((tmp_path / "b" / "checkpoints").iterdir())) == 2
