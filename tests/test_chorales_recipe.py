"""The chorales recipe: windowed filling never changes given voices, its output decodes to MIDI note for
note, and train / eval / sample run end to end on a handful of real chorales."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("music21")

from unmask.cli import main  # noqa: E402
from unmask.data import music  # noqa: E402
from unmask.nn import MaskedTokenModel, ModelConfig  # noqa: E402
from unmask.recipes.chorales import HARMONISE, fill_voices, window_starts  # noqa: E402
from unmask.sampling import FirstHittingSampler, MaskGITSampler  # noqa: E402

TRAIN = ("bach/bwv269", "bach/bwv347")
HELD_OUT = ("bach/bwv153.1", "bach/bwv385")  # in the hash split's held-out share


@pytest.fixture(scope="module")
def chorales():
    return [music.load_chorale(n) for n in TRAIN + HELD_OUT]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(music.VOCAB_SIZE, music.layout(16), dim=16, depth=1, heads=2)).eval()


def test_window_starts_cover_the_piece_with_half_window_steps():
    assert window_starts(40, 16) == [0, 8, 16, 24]
    assert window_starts(16, 16) == [0]
    with pytest.raises(ValueError, match="shorter"):
        window_starts(10, 16)


@pytest.mark.parametrize("sampler", [MaskGITSampler(4), FirstHittingSampler()], ids=["maskgit", "first-hitting"])
@pytest.mark.parametrize("content", [HARMONISE, np.array([True, False, True, False])], ids=["harmonise", "s+t"])
def test_fill_voices_never_changes_the_given_voices(chorales, tiny_model, sampler, content):
    pieces = [c.tokens for c in chorales[2:]]
    out = fill_voices(tiny_model, pieces, content, sampler, torch.Generator().manual_seed(0))
    for before, after in zip(pieces, out, strict=True):
        assert after.shape == before.shape
        assert np.array_equal(after[~content], before[~content])
        assert (after < music.MASK_ID).all() and (after >= 0).all()
        assert not np.array_equal(after[content], before[content])  # an untrained model does not copy Bach


def test_generated_tokens_decode_to_midi_note_for_note(chorales, tiny_model, tmp_path):
    out = fill_voices(tiny_model, [chorales[2].tokens], HARMONISE, MaskGITSampler(4), torch.Generator().manual_seed(1))
    path = music.write_midi(out[0], tmp_path / "gen.mid")
    back = music.read_midi(path, 2, out[0].shape[1])
    for v in range(4):
        assert music.notes(back[v]) == music.notes(out[0][v])


TINY = ["train.steps=2", "train.batch_size=4", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2",
        "data.window=16", "sampler.steps=4", "eval.harmonies=1", "eval.unconditional=2", "eval.midi_examples=1"]


def test_train_eval_sample_end_to_end(chorales, tmp_path, capsys):
    cache = tmp_path / "cache"
    music._write_cache(music._cache_path(cache, None, 2), chorales)  # a four-chorale corpus stands in for all
    run = tmp_path / "run"
    assert main(["train", "chorales", "--out", str(run), *TINY, f"data.cache={cache}", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["held_out_chorales"] == 2 and metrics["given_soprano_unchanged"] == 1.0
    assert metrics["real.note_accuracy"] == 1.0
    assert 0 <= metrics["model.note_accuracy"] <= 1 and 0 <= metrics["unigram.in_key_ratio"] <= 1
    mids = sorted(p.name for p in (run / "midi").iterdir())
    assert mids == ["bach-bwv153.1-harmonised.mid", "bach-bwv153.1-real.mid", "unconditional-0.mid"]
    real = music.read_midi(run / "midi" / "bach-bwv153.1-real.mid", 2, chorales[2].tokens.shape[1])
    assert np.array_equal(real, chorales[2].tokens)
    report = (run / "report.md").read_text()
    assert "| note accuracy | " in report and "(unigram.note_accuracy) | higher |" in report
    assert "(real_windows.notes_per_beat) |" in report and "`midi/`" in report
    assert main(["eval", str(run), "sampler.name=maskgit", "eval.unconditional=3"]) == 0
    assert json.loads((run / "metrics.json").read_text())["given_soprano_unchanged"] == 1.0
    out = tmp_path / "elsewhere" / "x"  # the recipe's suffix is added; nothing is looked up beside it
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out.with_suffix('.mid')}\n"
    sample = music.read_midi(out.with_suffix(".mid"), 2)
    assert sample.shape[0] == 4 and 16 <= sample.shape[1] <= 4 * 16 + 3 * 8
    assert main(["eval", str(run), "data.window=8"]) == 2  # the data the run was trained on is fixed


def test_the_parsed_corpus_is_kept_once_per_process(chorales, tmp_path):
    from unmask.recipes import Run
    from unmask.recipes.chorales import Chorales

    cache = tmp_path / "cache"
    music._write_cache(music._cache_path(cache, None, 2), chorales)
    recipe = Chorales().with_overrides([f"data.cache={cache}"])
    first = recipe.corpus(Run(tmp_path / "a", progress=False))
    assert [c.name for c in first] == [c.name for c in chorales]
    assert recipe.corpus(Run(tmp_path / "b", progress=False)) is first  # same cache folder and grid: not read again


@pytest.mark.parametrize("override,needle", [
    ("train.step=5", "unknown key 'train.step'; did you mean 'train.steps'?"),
    ("train.steps=0", "train.steps=0 is out of range"),
    ("train.lr=fast", "train.lr='fast' is not a number"),
    ("model.width=16", "unknown key 'model.width'"),
    ("model.depth=0", "model.depth=0 is out of range"),
    ("model.dim=1.5", "model.dim='1.5' is not an integer"),
    ("data.windw=8", "unknown key 'data.windw'; did you mean 'data.window'?"),
    ("data.grid=3", "data.grid=3 is not allowed; data.grid must be one of 2, 4"),
    ("data.transpose=7", "data.transpose=7 is out of range; data.transpose must be in [0, 6]"),
    ("data.hop=x", "data.hop='x' is not an integer"),
    ("objective.shedule=cosine", "unknown key 'objective.shedule'; did you mean 'objective.schedule'?"),
    ("objective.schedule=cosin", "objective.schedule='cosin' is not allowed"),
    ("sampler.nam=maskgit", "unknown key 'sampler.nam'; did you mean 'sampler.name'?"),
    ("sampler.name=llada", "sampler.name='llada' is not allowed"),
    ("sampler.temperature=hot", "sampler.temperature='hot' is not a number"),
    ("eval.harmony=2", "unknown key 'eval.harmony'; did you mean 'eval.harmonies'?"),
    ("eval.harmonies=0", "eval.harmonies=0 is out of range; eval.harmonies must be >= 1"),
    ("eval.unconditional=1.5", "eval.unconditional='1.5' is not an integer"),
])
def test_a_wrong_setting_in_any_section_is_one_line_and_exit_2(override, needle, capsys):
    assert main(["train", "chorales", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask: error: ") and needle in err


def test_the_flat_settings_of_an_older_run_are_upgraded_to_sections():
    from pathlib import Path

    from unmask.recipes.chorales import Chorales

    old = {"steps": 7, "batch_size": 4, "lr": 2e-3, "warmup": 1, "seed": 3, "dim": 16, "depth": 1, "heads": 2,
           "grid": 4, "window": 8, "hop": 2, "transpose": 1, "schedule": "linear", "sampler": "maskgit",
           "sampler_steps": 5, "temperature": 0.9, "choice_temperature": 2.0, "harmonies": 1, "unconditional": 2,
           "midi_examples": 0, "cache": "c", "checkpoint_every": 6}
    with pytest.warns(UserWarning, match="upgraded to sections"):
        s = Chorales.settings_from({"recipe": "chorales", "config": old}, Path("old"))
    assert (s.train.steps, s.train.seed, s.train.checkpoint_every, s.model.dim) == (7, 3, 6, 16)
    assert (s.data.grid, s.data.window, s.data.hop, s.data.transpose, s.data.cache) == (4, 8, 2, 1, "c")
    sampler = s.sampler
    assert (sampler.name, sampler.steps, sampler.temperature, sampler.choice_temperature) == ("maskgit", 5, 0.9, 2.0)
    assert (s.objective.schedule, s.eval.harmonies, s.eval.unconditional, s.eval.midi_examples) == ("linear", 1, 2, 0)
