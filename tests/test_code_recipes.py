"""The four code recipes (`mlm-code`, `electra-code`, `mdlm-code`, `ar-code`) through the command line:
every wrong key, value and type of each section is one error line; samples read the run's own
tokenizer; runs written before settings had sections load; and train, evaluate and sample end to end
at tiny sizes on the real corpus (about 10 s to train the shared tokenizer on the whole standard
library and load the corpus once, then a few seconds per recipe)."""

import json

import pytest

pytest.importorskip("tokenizers")

from unmask.cli import main  # noqa: E402
from unmask.config import to_dict  # noqa: E402
from unmask.data import code  # noqa: E402
from unmask.recipes.ar_code import ArCode  # noqa: E402
from unmask.recipes.code_base import SEPARATOR  # noqa: E402
from unmask.recipes.electra_code import ElectraCode  # noqa: E402
from unmask.recipes.mdlm_code import MdlmCode  # noqa: E402
from unmask.recipes.mlm_code import MlmCode  # noqa: E402
from unmask.recipes.run import Run  # noqa: E402
from unmask.train import save_checkpoint  # noqa: E402

CLASSES = {cls.name: cls for cls in (MlmCode, ElectraCode, MdlmCode, ArCode)}
SMALL = ["model.dim=16", "model.depth=1", "model.heads=2"]
TINY = {  # a few seconds each once the corpus is loaded (not to measure anything)
    "mlm-code": ["objective.masker=whole-word", "sampler.steps=2"],
    "electra-code": ["sampler.steps=2"],
    "mdlm-code": ["eval.infill_cases=2", "eval.variance_repeats=2", "eval.bound_draws=1", "sampler.maskgit_steps=2",
                  "sampler.ancestral_steps=2"],
    "ar-code": ["objective.cm3=true", "objective.meap=true", "eval.infill_cases=2"],
}
TRAIN = ["train.steps=2", "train.batch_size=4", "train.warmup=1", "eval.chunks=16", *SMALL]
METRICS = {
    "mlm-code": ["heldout_accuracy", "heldout_accuracy_own_masker", "probe_accuracy", "probe_majority"],
    "electra-code": ["heldout_gen_acc", "heldout_disc_acc", "heldout_replaced_share", "probe_accuracy"],
    "mdlm-code": ["heldout_bound_bits", "bound_var_coupled", "infill_parse_unigram", "infill_parse_first-hitting",
                  "infill_token_acc_maskgit-greedy", "infill_nfe_ancestral"],
    "ar-code": ["heldout_nll_bits", "repeat_accuracy", "other_accuracy", "infill_parse_cm3"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def one_error_line(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask: error: "), err
    return err


@pytest.mark.parametrize("name", CLASSES)
def test_a_misspelled_key_names_the_dotted_one(name, capsys):
    err = one_error_line(["train", name, "steps=3"], capsys)
    assert "did you mean 'train.steps'?" in err
    err = one_error_line(["train", name, "data.vocab=300"], capsys)
    assert "did you mean 'data.vocab_size'?" in err


def test_settings_that_do_not_fit_are_one_line(tmp_path, capsys):
    # a generator of width 69 (0.5390625 of 128) does not split into heads of 32
    err = one_error_line(["train", "electra-code", "model.generator_share=0.5390625"], capsys)
    assert "the settings do not build a model" in err and "generator width 69" in err
    err = one_error_line(["train", "mlm-code", "--out", tmp_path / "r", "--no-progress", *SMALL,
                          f"data.tokenizer={tmp_path / 'no' / 'tokenizer.json'}"], capsys)
    assert "data.tokenizer=" in err and "no such file or folder" in err


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    """A tokenizer of 300 tokens trained on a few standard-library files: enough to decode samples."""
    texts = [(code.stdlib_root() / f).read_text() for f in ("textwrap.py", "shlex.py", "glob.py")]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    code.train_tokenizer(texts, 300).save(path)
    return path


def untrained_run(folder, recipe, tokenizer, config=None):
    """A run folder holding `recipe`'s initial weights as a checkpoint and a tokenizer: enough to sample."""
    save_checkpoint(folder, 2, {"model": recipe.objective().state_dict()}, config or recipe.run_config(), {})
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return folder


@pytest.mark.parametrize("name", CLASSES)
def test_samples_are_text_decoded_with_the_runs_own_tokenizer(name, tmp_path, small_tokenizer, capsys):
    recipe = CLASSES[name]().with_overrides([*SMALL, "data.vocab_size=300", "data.length=16", *TINY[name]])
    run = untrained_run(tmp_path / "run", recipe, small_tokenizer)
    elsewhere = tmp_path / "elsewhere" / "drawn"  # not beside the tokenizer; the suffix .txt is added
    assert main(["sample", str(run), "--n", "4", "--out", str(elsewhere)]) == 0
    written = elsewhere.with_suffix(".txt")
    assert f"wrote {written}" in capsys.readouterr().out
    chunks = written.read_text().split(SEPARATOR)
    assert len(chunks) == 4 and all(chunks)
    assert main(["sample", str(run), "--n", "1"]) == 0 and (run / "samples.txt").read_text()
    (run / "tokenizer.json").unlink()
    err = one_error_line(["sample", run, "--n", "1"], capsys)
    assert "tokenizer.json is missing" in err


OLD_FLAT = {  # what a run folder's config.json held before settings had sections (no defaults)
    "common": {"steps": 3, "batch_size": 4, "lr": 0.002, "warmup": 1, "seed": 5, "length": 16, "vocab_size": 300,
               "dim": 16, "depth": 1, "heads": 2, "eval_chunks": 7, "checkpoint_every": 0},
    "mlm-code": {"masker": "span", "ratio": 0.2, "corruption": "mask", "emd": True, "emd_layers": 1},
    "electra-code": {"disc_weight": 10.0, "generator_share": 0.5, "ratio": 0.3},
    "mdlm-code": {"coupled": True, "temperature": 0.5, "maskgit_steps": 3, "ancestral_steps": 5, "infill_cases": 6,
                  "bound_draws": 2, "variance_repeats": 3},
    "ar-code": {"meap": True, "meap_ratio": 0.2, "cm3": True, "cm3_lambda": 2.0, "infill_cases": 6,
                "temperature": 0.5},
}
UPGRADED = {  # where those settings live now
    "mlm-code": {"objective": {"masker": "span", "ratio": 0.2, "corruption": "mask"},
                 "model": {"emd": True, "emd_layers": 1}},
    "electra-code": {"objective": {"disc_weight": 10.0, "ratio": 0.3}, "model": {"generator_share": 0.5}},
    "mdlm-code": {"objective": {"coupled": True}, "sampler": {"temperature": 0.5, "maskgit_steps": 3,
                                                              "ancestral_steps": 5},
                  "eval": {"infill_cases": 6, "bound_draws": 2, "variance_repeats": 3}},
    "ar-code": {"objective": {"meap": True, "meap_ratio": 0.2, "cm3": True, "cm3_lambda": 2.0},
                "sampler": {"temperature": 0.5}, "eval": {"infill_cases": 6}},
}


@pytest.mark.parametrize("name", CLASSES)
def test_a_run_with_the_older_flat_settings_is_upgraded_and_samples(name, tmp_path, small_tokenizer, capsys):
    cls = CLASSES[name]
    with pytest.warns(UserWarning, match="upgraded"):
        settings = cls.settings_from({"config": {**OLD_FLAT["common"], **OLD_FLAT[name]}}, tmp_path)
    s = to_dict(settings)
    assert s["train"] | {"steps": 3, "batch_size": 4, "lr": 0.002, "warmup": 1, "seed": 5} == s["train"]
    assert s["data"] | {"length": 16, "vocab_size": 300, "tokenizer": "", "source": ""} == s["data"]
    assert s["eval"]["chunks"] == 7
    assert s["model"] | {"dim": 16, "depth": 1, "heads": 2} == s["model"]
    for section, values in UPGRADED[name].items():
        assert s[section] | values == s[section], section
    recipe = cls(settings)
    config = {"recipe": name, "config": {**OLD_FLAT["common"], **OLD_FLAT[name]}, "model": recipe.model_dict()}
    run = untrained_run(tmp_path / "old", recipe, small_tokenizer, config)
    assert main(["sample", str(run), "--n", "2"]) == 0
    assert "upgraded to sections" in capsys.readouterr().err
    assert len((run / "samples.txt").read_text().split(SEPARATOR)) == 2


# end to end on the real corpus ------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_tokenizer(tmp_path_factory):
    """The default tokenizer (8,192 tokens) trained once on the standard library; every run copies it
    (`data.tokenizer`), so the corpus is loaded once in this process."""
    folder = tmp_path_factory.mktemp("corpus")
    MlmCode().corpus(Run(folder))
    return folder / "tokenizer.json"


@pytest.mark.parametrize("name", CLASSES)
def test_train_eval_and_sample_through_the_command_line(name, tmp_path, shared_tokenizer, capsys):
    run = tmp_path / "run"
    argv = ["train", name, "--out", run, "--no-progress", f"data.tokenizer={shared_tokenizer}", *TRAIN, *TINY[name]]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert (run / "tokenizer.json").read_bytes() == shared_tokenizer.read_bytes()
    for promised in ("metrics.json", "metrics.csv", "report.md"):
        assert (run / promised).is_file(), promised
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(METRICS[name]) <= set(metrics), sorted(metrics)
    report = (run / "report.md").read_text()
    assert report.startswith(f"# {name}: ") and "| metric | value | baseline | better | holds |" in report
    if name in ("mdlm-code", "ar-code"):  # the infilled bodies, with the original, in the report
        examples = json.loads((run / "infill.json").read_text())
        assert len(examples) == metrics["infill_cases"] == 2 and examples[0]["original"]
        assert "## Infilled function bodies" in report
    (run / "metrics.json").unlink()
    again = ["eval.chunks=8"] + (["eval.infill_cases=1"] if name in ("mdlm-code", "ar-code") else [])
    assert main(["eval", str(run), *again]) == 0
    assert set(METRICS[name]) <= set(json.loads((run / "metrics.json").read_text()))
    out = tmp_path / "samples" / "x.txt"
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert len(out.read_text().split(SEPARATOR)) == 4
    one_error_line(["eval", run, "model.dim=32"], capsys)  # eval changes only sampler.* and eval.*
