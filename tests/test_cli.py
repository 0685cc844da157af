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
        (["train", "digits", "step=5"], "unknown key 'step'; did you mean 'steps'?"),
        (["train", "digits", "steps=five"], "steps='five' is not an integer"),
        (["train", "digits", "lr=-1"], "lr=-1.0 is out of range; lr must be > 0"),
        (["train", "digits", "steps=0"], "steps=0 is out of range; steps must be >= 1"),
        (["train", "digits", "ema=1.5"], "ema=1.5 is out of range; ema must be in [0.0, 1.0]"),
        (["train", "digits", "schedule=cosin"], "schedule='cosin' is not allowed; schedule must be one of"),
        (["train", "digits", "lr=nan"], "lr=nan is not a finite number"),
        (["train", "digits", "steps"], "override 'steps' is not of the form key=value"),
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


def test_recipes_lists_settings(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    from unmask.recipes.digits import Config

    assert "digits:" in out and f"steps={Config().steps}" in out and "P59" in out


def test_process_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "unmask", "train", "digits", "heads=x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "heads='x' is not an integer" in proc.stderr


def test_tiny_digits_run_end_to_end(tmp_path, capsys):
    """Train a few steps, evaluate, sample: every promised file appears."""
    run = tmp_path / "run"
    args = ["train", "digits", "--out", str(run), "--no-progress", "steps=3", "dim=16", "depth=1",
            "heads=2", "n_samples=20", "batch_size=16", "sampler_steps=3"]
    assert main(args) == 0
    for name in ["metrics.json", "samples.png", "inpaint.png", "report.md", "metrics.csv"]:
        assert (run / name).is_file(), name
    assert main(["eval", str(run), "sampler=first-hitting"]) == 0
    assert main(["sample", str(run), "--n", "7", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["eval", str(run), "dim=32"]) == 2
    assert "only evaluation settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "digits", "micro_bach=4"], "unknown key 'micro_bach'; did you mean 'micro_batch'?"),
        (["train", "digits", "parallel=mpi"], "parallel='mpi' is not allowed; parallel must be one of ddp, fsdp"),
        (["train", "digits", "precision=fp16"], "precision='fp16' is not allowed; precision must be one of auto, bf16"),
        (["train", "digits", "beta2=1"], "beta2=1.0 is out of range; beta2 must be in [0.0, 1.0)"),
        (["train", "digits", "min_lr_ratio=1.5"], "min_lr_ratio=1.5 is out of range; min_lr_ratio must be in [0.0, 1"),
        (["train", "digits", "keep=0"], "keep=0 is out of range; keep must be >= 1"),
        (["train", "digits", f"seed={2**63}"], f"seed={2**63} is too large"),
        (["train", "digits", "dim=36", "heads=5"], "the settings do not build a model: width 36 is not divisible by 5"),
    ],
)
def test_trainer_settings_and_settings_that_do_not_fit_are_checked(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_recipes_lists_the_trainer_settings_too(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "  parallel=ddp  [one of ddp, fsdp]" in out and "  micro_batch=0  [>= 0]" in out and "(trainer)" in out
    assert "  precision=auto  [one of auto, bf16, fp32]" in out


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["train", "digits", "--out", str(tmp_path / "f")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def tiny_run(root, steps=(1, 2)):
    """A digits run folder with checkpoints at `steps` (untrained weights): fast to evaluate."""
    import torch

    from unmask.recipes import digits
    from unmask.train import save_checkpoint

    cfg = digits.Config(dim=16, depth=1, heads=2, n_samples=10, sampler_steps=1)
    torch.manual_seed(0)
    weights = digits.build(cfg).state_dict()
    return [save_checkpoint(root, s, {"model": weights}, digits.run_config(cfg), {}, keep=5) for s in steps]


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
    assert err == f"unmask: error: no usable checkpoint in {tmp_path / 'run' / 'checkpoints'}: step_00000004: " \
                  "config.json does not match its checksum\n"


def test_a_diverging_run_stops_with_one_line_naming_the_step_and_keeps_its_checkpoint(tmp_path, capsys):
    from unmask.train.checkpoint import latest_checkpoint, load_checkpoint

    args = ["train", "digits", "--out", str(tmp_path), "--no-progress", "steps=6", "dim=16", "depth=1", "heads=2",
            "batch_size=16", "warmup=0", "lr=1e6", "checkpoint_every=1"]
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
