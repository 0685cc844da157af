"""The four code recipes end to end on the real corpus: train a few steps, evaluate, load the run
back, sample. Slow (the tokenizer is trained on the whole standard library): run with -m slow."""

import json

import pytest

pytest.importorskip("tokenizers")

from unmask.cli import main  # noqa: E402

TINY = ["steps=2", "batch_size=4", "dim=16", "depth=1", "heads=2", "eval_chunks=16", "--no-progress"]


@pytest.mark.slow
def test_code_recipes_train_evaluate_and_sample(tmp_path):
    first = tmp_path / "mlm"
    assert main(["train", "mlm-code", "--out", str(first), "masker=whole-word", *TINY]) == 0
    tokenizer = first / "tokenizer.json"
    assert tokenizer.is_file()
    extra = {"mdlm-code": ["infill_cases=2", "variance_repeats=2", "bound_draws=1"],
             "ar-code": ["cm3=true", "meap=true", "infill_cases=2"], "electra-code": []}
    for name, settings in extra.items():
        run = tmp_path / name
        run.mkdir()
        (run / "tokenizer.json").write_bytes(tokenizer.read_bytes())  # one tokenizer for all
        assert main(["train", name, "--out", str(run), *settings, *TINY]) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert (run / "report.md").is_file() and metrics
    assert main(["eval", str(tmp_path / "mdlm-code"), "infill_cases=2", "variance_repeats=2"]) == 0
    for name in ("mlm", "mdlm-code", "ar-code"):
        assert main(["sample", str(tmp_path / name), "--n", "2", "--out", str(tmp_path / name / "s.txt")]) == 0
        assert (tmp_path / name / "s.txt").read_text().strip()
    assert main(["sample", str(tmp_path / "electra-code"), "--n", "2"]) == 2  # a discriminator does not generate
