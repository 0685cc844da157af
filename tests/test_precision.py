"""bf16 training on a CPU (`TrainConfig.precision`): the forward pass runs under autocast when asked
and only then, attention inside it runs in float32, and a bf16 MAE step follows the float32 one to
bf16 rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unmask.errors import UnmaskError
from unmask.nn.mae import MAEConfig, MaskedAutoencoder
from unmask.nn.transformer import Transformer, attention
from unmask.objectives.base import ObjectiveOutput
from unmask.objectives.mae import MaskedAutoencoding
from unmask.train import TrainConfig, Trainer
from unmask.train.distributed import autocast, uses_bf16

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_which_precision_computes_in_bf16():
    assert [uses_bf16(CPU, p) for p in ("auto", "bf16", "fp32")] == [False, True, False]
    assert [uses_bf16(GPU, p) for p in ("auto", "bf16", "fp32")] == [True, True, False]
    with pytest.raises(UnmaskError, match="precision must be one of auto, bf16, fp32"):
        uses_bf16(CPU, "fp16")
    with pytest.raises(UnmaskError, match="precision must be one of auto, bf16, fp32"):
        Trainer(Probe(), {"x": torch.randn(8, 4)}, TrainConfig(precision="half"), "unused", {"recipe": "probe"})


class Probe(nn.Module):
    """An objective that records, at each forward and backward, whether CPU autocast is on and the
    dtype a Linear computes in."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.seen: list[tuple[str, bool, torch.dtype]] = []

    def forward(self, batch, generator=None):
        y = self.lin(batch["x"])
        self.seen.append(("forward", torch.is_autocast_enabled("cpu"), y.dtype))
        y.register_hook(lambda g: self.seen.append(("backward", torch.is_autocast_enabled("cpu"), g.dtype)))
        loss = y.float().pow(2).mean()
        return ObjectiveOutput(loss, {"loss": loss.item()})


@pytest.mark.parametrize("precision, dtype", [("auto", torch.float32), ("fp32", torch.float32),
                                              ("bf16", torch.bfloat16)])
def test_the_trainer_autocasts_the_forward_pass_only_when_asked(tmp_path, precision, dtype):
    probe = Probe()
    cfg = TrainConfig(steps=2, batch_size=4, log_every=1, precision=precision)
    Trainer(probe, {"x": torch.randn(8, 4)}, cfg, tmp_path, {"recipe": "probe"}, progress=False).fit()
    forward = [s for s in probe.seen if s[0] == "forward"]
    backward = [s for s in probe.seen if s[0] == "backward"]
    assert forward == [("forward", dtype == torch.bfloat16, dtype)] * 2
    assert [on for _, on, _ in backward] == [False, False]  # the backward pass runs outside autocast
    assert probe.lin.weight.dtype == torch.float32  # weights stay float32


def test_attention_on_cpu_runs_in_float32_for_bf16_inputs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g).bfloat16() for _ in range(3))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16()
    got = attention(q, k, v)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    # the bf16 kernel rounds differently: the test above can tell the two apart
    assert not torch.equal(F.scaled_dot_product_attention(q, k, v), want)


def test_attention_under_cpu_autocast_is_float32_with_masks_and_gradients():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.rand(5, 5, generator=g) > 0.3
    mask.fill_diagonal_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v, mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    got.sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in (q, k, v))


def test_transformer_under_bf16_autocast_follows_float32():
    torch.manual_seed(0)
    t = Transformer(32, 2, 4)
    x = torch.randn(4, 9, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = t(x).float()
    high = t(x)
    assert (low - high).abs().max() < 0.05 * high.abs().max()


def test_a_bf16_mae_step_follows_the_float32_step():
    """Same weights, same mask: loss within 1% and gradients pointing the same way (cosine > 0.99)."""
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(16, 16), patch=4, dim=48, depth=2, heads=3, decoder_dim=32, decoder_heads=4)
    objective = MaskedAutoencoding(MaskedAutoencoder(cfg), ratio=0.75)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(8, 1, 16, 16, generator=g)
    mask = objective.draw_mask(8, g)
    losses, grads = [], []
    for precision in ("fp32", "bf16"):
        objective.zero_grad()
        with autocast(CPU, precision):
            loss = objective.reconstruction(images, mask)[0]
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in objective.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=0.01)
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
