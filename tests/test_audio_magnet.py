"""Recipe `audio-magnet` (MAGNeT, Ziv et al. 2024, arXiv:2401.04577, against MaskGIT): both generators
decode at exactly the same number of denoiser calls, the word prefix is kept, MAGNeT trains with its
own mask and loss and MaskGIT with random masks over the streams, a tiny run writes every metric and
its report, `sample` writes a WAV, and settings that cannot go together are refused."""

from __future__ import annotations

import wave

import pytest
import torch

from unmask.data import speech
from unmask.errors import UnmaskError
from unmask.masking import MagnetMask, RandomMask
from unmask.objectives import MagnetTokenModeling, MaskedTokenModeling
from unmask.recipes import get
from unmask.recipes.audio_magnet import AudioMagnet
from unmask.recipes.run import Run
from unmask.sampling.magnet import MagnetSampler

TINY = ["train.steps=15", "acoustic.steps=15", "eval.samples_per_word=1", "eval.judge_steps=15",
        "model.dim=32", "model.depth=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    recipe = AudioMagnet().with_overrides(TINY)
    run = Run(tmp_path_factory.mktemp("audio-magnet"), progress=False)
    return recipe, run, recipe.train(run)


def test_registered_with_both_roles():
    assert get("audio-magnet") is AudioMagnet
    recipe = AudioMagnet()
    main, baseline = recipe.build(), recipe.build_role("maskgit")
    assert isinstance(main, MagnetTokenModeling) and isinstance(main.masker, MagnetMask)
    assert type(baseline) is MaskedTokenModeling and baseline.masker == RandomMask(("streams",))
    layout = recipe.layout()
    assert layout.names == ("label", "streams") and layout.segment("streams").shape == (3, 24)
    sampler = recipe.sampler("magnet")
    assert isinstance(sampler, MagnetSampler) and sampler.steps == (6, 3, 3) and sampler.offset == 1


def test_equal_calls_and_the_word_prefix_kept(trained):
    recipe, run, metrics = trained
    assert metrics["nfe_magnet"] == metrics["nfe_maskgit"] == recipe.settings.sampler.nfe == 12
    assert metrics["samples_per_generator"] == len(speech.WORDS)
    for key in ("fd", "precision", "recall", "word_acc"):
        for who in ("magnet", "maskgit", "real_train", "reconstructed"):
            assert f"{key}_{who}" in metrics
    assert metrics["fd_real_train"] < metrics["fd_magnet"]  # 15 steps cannot reach real speech
    objective = recipe.load(run)
    words = torch.tensor([3, 17])
    model = objective.model
    from unmask.sampling import generate

    canvas = torch.full((2, model.config.layout.n), model.mask_id)
    canvas[:, 0] = words + recipe.codes()
    out = generate(model, canvas, recipe.sampler("magnet"), mask_id=model.mask_id,
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.tokens[:, 0], words + recipe.codes())
    assert (out.tokens[:, 1:] < recipe.codes()).all()
    report = (run.folder / "report.md").read_text()
    assert "MAGNeT" in report and "samples.png" in report


def test_sample_writes_a_wav(trained, tmp_path):
    recipe, run, _ = trained
    path = recipe.sample(run, recipe.load(run), 2, tmp_path / "words")
    with wave.open(str(path)) as f:
        assert path.suffix == ".wav" and f.getframerate() == 22050 and f.getnframes() > 22050 // 2


def test_refuses_steps_that_do_not_fit():
    with pytest.raises(UnmaskError, match="adds up to"):
        AudioMagnet().with_overrides(["sampler.magnet_steps=6,3,2"])
    with pytest.raises(UnmaskError, match="acoustic.stages"):
        AudioMagnet().with_overrides(["sampler.magnet_steps=6,6"])
    with pytest.raises(UnmaskError, match="longer than a stream"):
        AudioMagnet().with_overrides(["magnet.span_len=30"])
