"""The per-body-part motion tokenizer and its training objective."""

import pytest
import torch

pytest.importorskip("pybullet_data")

from unmask.data import motion  # noqa: E402
from unmask.nn.motion_tokenizer import PARTS, MotionTokenizer, MotionTokenizerConfig  # noqa: E402
from unmask.objectives.motion_tokenizer import MotionTokenizerTraining  # noqa: E402


def tokenizer() -> MotionTokenizer:
    torch.manual_seed(0)
    tok = MotionTokenizer(MotionTokenizerConfig(width=16, codes=8, code_dim=4))
    tok.set_normalisation(motion.windows("train", 8).x)
    return tok.eval()


def test_shapes_and_streams_per_part():
    tok = tokenizer()
    x = motion.windows("train", 8).x[:5]
    codes = tok.encode(x)
    assert codes.shape == (5, len(PARTS), 4) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 8
    assert tok.decode(codes).shape == (5, 8, motion.F)
    assert tok.decode(torch.zeros(2, len(PARTS), 7, dtype=torch.long)).shape == (2, 14, motion.F)


def test_a_part_decodes_from_its_own_stream_only():
    tok = tokenizer()
    codes = tok.encode(motion.windows("train", 8).x[:3])
    changed = codes.clone()
    arm = PARTS.index("left_arm")
    changed[:, arm] = (changed[:, arm] + 1) % 8
    a, b = tok.decode(codes), tok.decode(changed)
    outside = [i for i in range(motion.F) if i not in motion.BODY_PARTS["left_arm"]]
    assert torch.equal(a[..., outside], b[..., outside])
    assert not torch.equal(a[..., list(motion.BODY_PARTS["left_arm"])], b[..., list(motion.BODY_PARTS["left_arm"])])


def test_eval_forward_equals_decode_of_encode():
    tok = tokenizer()
    x = motion.windows("test", 8).x[:4]
    with torch.no_grad():
        assert torch.allclose(tok(x).reconstruction, tok.decode(tok.encode(x)), atol=1e-6)


def test_normalisation_per_feature_and_the_loss():
    tok = tokenizer()
    x = motion.windows("train", 8).x
    flat = x.reshape(-1, motion.F).double()
    assert torch.allclose(tok.scale().double(), flat.std(0).clamp(min=1e-3), atol=1e-5)
    out = MotionTokenizerTraining(tok.train())({"motion": x[:16]}, torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.metrics) == {"loss", "mse", "perplexity", "used_share"}
    with pytest.raises(ValueError, match="multiple of 2"):
        tok.encode(x[:2, :7])
