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


def test_train_eval_sample_end_to_end(chorales, tmp_path):
    cache = tmp_path / "cache"
    music._write_cache(music._cache_path(cache, None, 2), chorales)  # a four-chorale corpus stands in for all
    run = tmp_path / "run"
    tiny = ["steps=2", "batch_size=4", "dim=16", "depth=1", "heads=2", "window=16", "harmonies=1",
            "unconditional=2", "midi_examples=1", f"cache={cache}", "--no-progress"]
    assert main(["train", "chorales", "--out", str(run), *tiny]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["held_out_chorales"] == 2 and metrics["given_soprano_unchanged"] == 1.0
    assert metrics["real.note_accuracy"] == 1.0
    assert 0 <= metrics["model.note_accuracy"] <= 1 and 0 <= metrics["unigram.in_key_ratio"] <= 1
    mids = sorted(p.name for p in (run / "midi").iterdir())
    assert mids == ["bach-bwv153.1-harmonised.mid", "bach-bwv153.1-real.mid", "unconditional-0.mid"]
    real = music.read_midi(run / "midi" / "bach-bwv153.1-real.mid", 2, chorales[2].tokens.shape[1])
    assert np.array_equal(real, chorales[2].tokens)
    assert "| model |" in (run / "report.md").read_text()
    assert main(["eval", str(run), "sampler=first-hitting"]) == 0
    assert main(["sample", str(run), "--n", "2"]) == 0
    sample = music.read_midi(run / "samples.mid", 2)
    assert sample.shape[0] == 4 and sample.shape[1] <= 16 + 8 + 16
