"""The acoustic tokenizer: shapes, decode(encode(x)) equal to the forward pass, the masked loss, and a
tiny training run in RUN/acoustic that stores and reloads."""

from __future__ import annotations

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.nn import AcousticTokenizer, AcousticTokenizerConfig
from unmask.objectives.audio_tokenizer import AcousticTokenizerTraining, masked_mse


@pytest.mark.parametrize("down", [1, 2])
def test_shapes_and_decode_of_encode_is_the_forward_pass(down):
    torch.manual_seed(0)
    tok = AcousticTokenizer(AcousticTokenizerConfig(width=16, down=down, stages=3, codes=8, code_dim=4))
    mel = torch.randn(5, 12, 40) - 6
    tok.train()
    tok(mel, generator=torch.Generator().manual_seed(0))  # restarts draw every codebook from the data
    tok.eval()
    codes = tok.encode(mel)
    assert codes.shape == (5, 3, 12 // down) and codes.dtype == torch.long and codes.max() < 8
    out = tok(mel)
    assert torch.equal(out.codes, codes)
    assert torch.equal(tok.decode(codes), out.reconstruction)
    assert out.reconstruction.shape == (5, 12, 40)
    assert tok.decode(codes[:, :1]).shape == (5, 12, 40)  # the first stage alone: the coarse version
    with pytest.raises(ValueError, match="multiple"):
        tok.encode(torch.zeros(2, 12, 39))


def test_masked_mse_scores_only_valid_frames():
    prediction, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    target[0, 2:] = 5.0  # after utterance 0's end: not scored
    assert float(masked_mse(prediction, target, torch.tensor([2, 4]))) == pytest.approx(1.0)
    # all frames: 3 channels x (2 frames of error 1 + 2 of 25 + 4 of 1) over 24 values
    assert float(masked_mse(prediction, target, None)) == pytest.approx(3 * (2 + 50 + 4) / 24)


def test_objective_metrics_and_normalisation():
    tok = AcousticTokenizer(AcousticTokenizerConfig(width=16, stages=2, codes=8, code_dim=4))
    mel = torch.randn(6, 8, 40) * 2 - 5
    tok.set_normalisation(mel)
    assert torch.allclose(tok.mel_mean, mel.reshape(-1, 40).mean(0), atol=1e-5)
    out = AcousticTokenizerTraining(tok)({"mel": mel, "lengths": torch.tensor([8, 4, 8, 8, 2, 8])},
                                         generator=torch.Generator().manual_seed(0))
    assert set(out.metrics) == {"loss", "mse", "perplexity", "used_share"}
    assert out.loss.requires_grad and float(out.metrics["loss"]) >= float(out.metrics["mse"])


def test_train_store_and_reload(tmp_path):
    pytest.importorskip("espeakng_loader")
    from unmask.recipes.audio_tokens import (
        AcousticTokenizerSettings,
        load_acoustic_tokenizer,
        measure_acoustic,
        stored_acoustic_tokens,
        train_acoustic_tokenizer,
    )
    from unmask.recipes.run import Run

    settings = AcousticTokenizerSettings(steps=3, batch_size=8, width=16, codes=8, code_dim=4)
    run = Run(tmp_path, progress=False)
    tok = train_acoustic_tokenizer(run, settings, seed=0)
    assert (tmp_path / "acoustic" / "checkpoints").is_dir()
    tokens = stored_acoustic_tokens(run, settings, "test")
    assert tokens.shape == (216, 3, 24) and tokens.dtype == torch.long
    again = load_acoustic_tokenizer(run, settings)
    from unmask.data import speech

    mel = speech.frames("test").mel[:10]
    with torch.no_grad():
        assert torch.equal(again.encode(mel), tokens[:10])
        assert torch.equal(tok.encode(mel), tokens[:10])
    figures = measure_acoustic(again, "test")
    assert {"mse", "mse_stages_1", "codes_used_3", "perplexity_2"} <= set(figures)
    with pytest.raises(UnmaskError, match="acoustic"):
        load_acoustic_tokenizer(run, AcousticTokenizerSettings(steps=3, width=16, codes=16, code_dim=4))
