import subprocess
import sys

import pytest

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
    assert "digits:" in out and "steps=1500" in out and "P59" in out


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
