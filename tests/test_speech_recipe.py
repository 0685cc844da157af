"""Recipe `speech` (MaskGCT, Wang et al. 2024, arXiv:2409.00750): the text and prompt segments are never
hidden in training and never changed by sampling, S2A is masked stream-wise at an exact count, prompts are
another word in the same voice, `sample` writes a WAV of the expected length for a word and refuses any
other prompt, and a tiny run trains, evaluates and samples."""

from __future__ import annotations

import wave

import pytest
import torch

from unmask.data import audio, speech
from unmask.errors import UnmaskError
from unmask.masking import RandomMask, StreamWiseMask
from unmask.objectives import MagnetTokenModeling, MaskedTokenModeling
from unmask.recipes import get
from unmask.recipes.run import Run
from unmask.recipes.speech import GAP, TEXT, Speech, prompt_pairs, spell
from unmask.sampling import MaskGITSampler, generate
from unmask.sampling.magnet import MagnetSampler

TINY = ["train.steps=3", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1", "model.heads=2",
        "semantic.steps=3", "semantic.dim=16", "semantic.depth=2", "semantic.layer=1", "semantic.codes=8",
        "semantic.kmeans_steps=2", "acoustic.steps=3", "acoustic.batch_size=8", "acoustic.width=8",
        "acoustic.codes=8", "sampler.t2s_steps=2", "sampler.s2a_steps=1,1,1", "eval.judge_steps=10"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A recipe and a run with both tokenizers, T2S and S2A trained a few steps (no evaluation)."""
    recipe = Speech().with_overrides(TINY)
    run = Run(tmp_path_factory.mktemp("speech"), progress=False)
    data = recipe.role_rows(run)
    assert torch.equal(recipe.training_data(run)["tokens"], data["main"])
    recipe.fit(run, recipe.objective("main"), {"tokens": data["main"]}, role="main")
    recipe.fit(run.sub("s2a"), recipe.objective("s2a"), {"tokens": data["s2a"]}, role="s2a")
    return recipe, run, data


def test_registered_with_two_generators():
    assert get("speech") is Speech and Speech.takes_prompt and Speech.sample_suffix == ".wav"
    recipe = Speech()
    t2s, s2a = recipe.build(), recipe.build_role("s2a")
    assert type(t2s) is MaskedTokenModeling and t2s.masker == RandomMask(("target",))
    assert isinstance(s2a, MagnetTokenModeling) and s2a.masker == StreamWiseMask("streams")
    assert recipe.t2s_layout().names == ("text", "prompt", "target")
    assert recipe.s2a_layout().segment("streams").shape == recipe.s2a_layout().segment("prompt").shape == (3, 24)
    with pytest.raises(UnmaskError, match="s2a_steps"):
        Speech().with_overrides(["sampler.s2a_steps=6,6"])


def test_spelling():
    assert spell("go", 64).tolist() == [64 + 6, 64 + 14] + [64 + 26] * (TEXT - 2)
    assert max(len(w) for w in speech.WORDS) == TEXT


def test_conditions_never_hidden_in_training():
    recipe = Speech()
    g = torch.Generator().manual_seed(0)
    t2s = recipe.t2s_layout()
    ratio = 0.1 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64)
    mask = recipe.build().masker(t2s, 64, ratio=ratio, generator=g)
    given = TEXT + 24
    assert not mask[:, :given].any() and mask[:, given:].any(1).all()
    s2a = recipe.s2a_layout()
    mask = recipe.build_role("s2a").masker(s2a, 64, ratio=0.5, generator=g)
    assert not mask[:, : s2a.slice("streams").start].any()


@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.5, 1.0])
def test_s2a_stream_wise_mask_exact(ratio):
    """Each row: one stream k; streams before k given, after k hidden, stream k hidden at round(m T) (>= 1)."""
    layout = Speech().s2a_layout()
    masker = StreamWiseMask("streams")
    mask = masker(layout, 300, ratio=ratio, generator=torch.Generator().manual_seed(1))
    streams = mask[:, layout.slice("streams")].view(300, 3, 24)
    count = max(1, round(ratio * 24))  # 0.01 -> 1, 0.3 -> 7, 0.5 -> 12, 1.0 -> 24
    stages = masker.stage(layout, mask)
    assert set(stages.tolist()) == {0, 1, 2}
    for row, k in zip(streams, stages.tolist(), strict=True):
        assert not row[:k].any() and row[k + 1:].all()
        assert int(row[k].sum()) == count
    targets = masker.targets(layout, mask)[:, layout.slice("streams")].view(300, 3, 24)
    assert int(targets.sum()) == 300 * count  # the loss reads stream k only
    with pytest.raises(ValueError, match="span_len"):
        StreamWiseMask("streams", span_len=3)


def test_prompts_are_another_word_same_voice():
    pairs = prompt_pairs("test", torch.Generator().manual_seed(0))
    test = speech.frames("test")
    keys = speech.load("test").keys
    assert (test.voices[pairs] == test.voices).all() and (pairs != torch.arange(len(pairs))).all()
    other_word = test.words[pairs] != test.words
    rendition = [k.split("/")[2] for k in keys]
    same_rendition = torch.tensor([rendition[j] == rendition[i] for i, j in enumerate(pairs.tolist())])
    assert (other_word & same_rendition).double().mean() > 0.9


def test_training_rows(tiny):
    recipe, run, data = tiny
    m = len(speech.frames("train").words)
    extra = round(recipe.settings.prompt.drop * m)
    assert data["main"].shape == (m + extra, TEXT + 48) and data["s2a"].shape == (m + extra, 24 + 2 * 3 * 24)
    bare = data["main"][m:, TEXT:TEXT + 24]
    assert (bare == recipe.blank("main")).all() and (data["main"][:m, TEXT:TEXT + 24] < 8).all()
    assert (data["s2a"][m:, 24:24 + 72] == recipe.blank("s2a")).all()


def test_sampling_keeps_text_and_prompt(tiny):
    recipe, run, data = tiny
    t2s, s2a = recipe.load(run).model, recipe.load(run.sub("s2a"), "s2a").model
    with pytest.raises(UnmaskError, match="s2a"):
        recipe.load(run.sub("s2a"))  # the S2A checkpoint is not read as T2S
    g = torch.Generator().manual_seed(0)
    rows = data["main"][:5].clone()
    canvas = rows.clone()
    canvas[:, TEXT + 24:] = t2s.mask_id
    out = generate(t2s, canvas, MaskGITSampler(2), mask_id=t2s.mask_id, generator=g).tokens
    assert torch.equal(out[:, :TEXT + 24], rows[:, :TEXT + 24]) and (out[:, TEXT + 24:] < 8).all()
    rows = data["s2a"][-5:].clone()  # no-prompt rows
    canvas = rows.clone()
    canvas[:, 24 + 72:] = s2a.mask_id
    sampler = MagnetSampler.for_layout(recipe.s2a_layout(), "streams", (1, 1, 1), span_len=1)
    out = generate(s2a, canvas, sampler, mask_id=s2a.mask_id, generator=g).tokens
    assert torch.equal(out[:, :24 + 72], rows[:, :24 + 72]) and (out[:, 24 + 72:] < 8).all()
    sem = recipe.t2s(t2s, data["main"][:5, :TEXT], data["main"][:5, TEXT:TEXT + 24], g)
    assert sem.shape == (5, 24) and (sem < 8).all()
    codes = recipe.s2a(s2a, sem, data["s2a"][:5, 24:24 + 72], g)
    assert codes.shape == (5, 3, 24) and (codes < 8).all()


def test_sample_writes_a_wav_and_refuses_other_words(tiny, tmp_path):
    recipe, run, _ = tiny
    path = recipe.sample(run, recipe.load(run), 2, tmp_path / "x", prompt="seven")
    one = audio.MelSpectrogram().to_wave(torch.zeros(1, 48, 40)).shape[1]
    with wave.open(str(path)) as w:
        assert path.suffix == ".wav" and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getframerate() == audio.RATE and w.getnframes() == 2 * (one + round(GAP * audio.RATE))
    from PIL import Image

    with Image.open(path.with_suffix(".png")) as picture:  # 2 spectrograms of 48 frames + 2-pixel gaps, scale 3
        assert picture.size == (3 * 2 * (48 + 2), 3 * 40)
    with pytest.raises(UnmaskError, match="zero, one, two"):
        recipe.sample(run, recipe.load(run), 1, tmp_path / "y", prompt="banana")


def test_tiny_run_measures_everything(tmp_path):
    recipe = Speech().with_overrides(TINY)
    metrics = recipe.train(Run(tmp_path, progress=False))
    for who in ("prompted", "unprompted", "s2a_true_semantic", "reconstructed", "real"):
        for what in ("word", "voice"):
            assert 0.0 <= metrics[f"{who}_{what}_acc"] <= 1.0
    assert metrics["prompt_same_voice"] == 1.0 and metrics["held_out_utterances"] == len(speech.frames("test").words)
    report = (tmp_path / "report.md").read_text()
    assert "(samples.png)" in report and "(samples.wav)" in report
    assert (tmp_path / "samples.wav").stat().st_size > 0 and (tmp_path / "samples.png").exists()
