"""Host syncs only where a human reads a number (STYLE habit 11): every objective the recipes build,
at tiny sizes, trains 6 steps with a metrics row every 3 and reads tensor values into Python at most
once per logged step (`host_syncs.assert_sync_budget`: the trainer's one read of the metrics and of
its non-finite record). Objectives return tensor metrics; the trainer reduces them at log time.
What the counter counts, and what it cannot see (boolean indexing, blocking copies), is in
tests/host_syncs.py."""

from __future__ import annotations

import pytest
import torch

from host_syncs import assert_sync_budget, count_host_syncs, read_steps
from unmask.layout import Layout
from unmask.masking import BernoulliMask, BertCorruption, MeapMask, RandomMask
from unmask.masking.cm3 import CausalMasking
from unmask.masking.masked_thought import MaskedThought
from unmask.nn import (
    BertConfig,
    BertMaskedModel,
    CausalTokenModel,
    EMDConfig,
    EMDMaskedTokenModel,
    MaskedTokenModel,
    ModelConfig,
)
from unmask.nn.mae import MAEConfig, MaskedAutoencoder, MaskedEncoder
from unmask.nn.point_mae import PointEncoder
from unmask.nn.point_tokenizer import PointTokenizer
from unmask.objectives import (
    DisjointMaskingJointDistillation,
    Electra,
    HardPatchMining,
    MaskAlign,
    MaskedAutoencoding,
    MaskedDiffusion,
    MaskedFrequencyModeling,
    MaskedTokenModeling,
    MaskedTokenOptimization,
    MimicBeforeReconstruct,
    NextTokenPrediction,
    SelectiveMaskedAutoencoding,
    UnifiedMaskedDiffusion,
    UnmaskedTokenLearning,
)
from unmask.objectives.cross_video import CrossVideoMAE
from unmask.objectives.point_bert import PointBERT
from unmask.objectives.point_cmae import PointCMAE
from unmask.objectives.point_mae import PointMAE
from unmask.objectives.videomae import VideoMaskedAutoencoding
from unmask.schedules import Schedule

V = 9
SEQ = Layout.seq(16)
DIGITS = Layout.seq(1, name="label") + Layout.grid(4, 4, name="pixels")  # digits' layout, smaller
B = 8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tokens(layout=SEQ, vocab=V):
    return {"tokens": torch.randint(0, vocab, (B, layout.n), generator=gen(1))}


def token_model(cls=MaskedTokenModel, layout=SEQ, **kw):
    torch.manual_seed(0)
    config = (EMDConfig if cls is EMDMaskedTokenModel else ModelConfig)(V, layout, dim=16, depth=2, heads=2, **kw)
    return cls(config)


def prompted():
    data = tokens()
    data["prompt"] = torch.arange(SEQ.n).expand(B, -1) < 4  # the first 4 tokens are given
    return data


def mae_config(**kw):
    return MAEConfig(**{**dict(image_size=(8, 8), channels=1, patch=2, dim=16, depth=2, heads=2, decoder_dim=8,
                                decoder_depth=1, decoder_heads=2, cls_token=False), **kw})


def mae(**kw):
    torch.manual_seed(0)
    return MaskedAutoencoder(mae_config(**kw))


def images():
    return {"images": torch.rand(B, 1, 8, 8, generator=gen(2))}


def video_model():
    torch.manual_seed(0)
    return MaskedAutoencoder(mae_config(image_size=(4, 8, 8), tubelet=2, depth=1))


def videos():
    return {"videos": torch.rand(B, 1, 4, 8, 8, generator=gen(3))}


def point_encoder(hide="drop"):
    torch.manual_seed(0)
    cfg = MAEConfig(image_size=(8,), patch=1, channels=3, dim=16, depth=1, heads=2, decoder_dim=8,
                    decoder_depth=1, decoder_heads=2, cls_token=False, hide=hide)
    return PointEncoder(cfg, 4, width=4)


def points():
    return {"points": torch.randn(B, 64, 3, generator=gen(4))}


def point_bert():
    enc = point_encoder("replace")
    groups = enc.group(points()["points"])
    return PointBERT(enc, PointTokenizer(5).fit(groups.points, gen(5)))


# name -> (objective, data), each built as a recipe builds it (src/unmask/recipes/*.py), at tiny sizes
CASES = {
    # MaskGIT's schedule over all tokens (chorales), and digits' per-segment draw weighted by segment
    "mtm-schedule": lambda: (MaskedTokenModeling(token_model(), RandomMask(), Schedule("cosine")), tokens()),
    "mtm-per-segment-weights": lambda: (
        MaskedTokenModeling(token_model(layout=DIGITS), RandomMask(), Schedule("cosine"), per_segment=True,
                            segment_weights={"label": 0.25, "pixels": 0.75}), tokens(DIGITS)),
    "mtm-balance-segments": lambda: (
        MaskedTokenModeling(token_model(layout=DIGITS), balance_segments=True), tokens(DIGITS)),
    # BERT: a fixed share with the 80/10/10 corruption (mlm-code), also on BERT's own layout and with EMD
    "mtm-bert": lambda: (MaskedTokenModeling(token_model(), RandomMask(), ratio=0.15,
                                             corruption=BertCorruption(random_range=(0, V))), tokens()),
    "mtm-bert-layout": lambda: (
        MaskedTokenModeling(BertMaskedModel(BertConfig(V, SEQ, dim=16, depth=2, heads=2)), RandomMask(), ratio=0.15,
                            corruption=BertCorruption()), tokens()),
    "mtm-emd": lambda: (MaskedTokenModeling(token_model(EMDMaskedTokenModel), RandomMask(), ratio=0.15), tokens()),
    "mtm-bernoulli": lambda: (MaskedTokenModeling(token_model(), BernoulliMask(), ratio=0.3), tokens()),
    # masked diffusion (mdlm-code, genmol)
    "diffusion": lambda: (MaskedDiffusion(token_model()), tokens()),
    "diffusion-coupled": lambda: (MaskedDiffusion(token_model(), coupled=True), tokens()),
    "diffusion-prompt": lambda: (MaskedDiffusion(token_model()), prompted()),
    # next-token prediction (ar-code, genmol): plain, MEAP's input masks, CM3's moved spans
    "ntp": lambda: (NextTokenPrediction(token_model(CausalTokenModel)), tokens()),
    "ntp-meap": lambda: (NextTokenPrediction(token_model(CausalTokenModel), input_masker=MeapMask()), tokens()),
    "ntp-cm3": lambda: (NextTokenPrediction(token_model(CausalTokenModel), bos_id=0,
                                            transform=CausalMasking(sentinels=(1, 2), eos=3, max_spans=2)), tokens()),
    # next-token SFT with a prompt (reasoning's AR baselines): plain, and Masked Thought's ramped input masks
    "ntp-prompt": lambda: (NextTokenPrediction(token_model(CausalTokenModel), bos_id=0), prompted()),
    "ntp-masked-thought": lambda: (NextTokenPrediction(token_model(CausalTokenModel), bos_id=0,
                                                       thought=MaskedThought(steps=6)), prompted()),
    "electra": lambda: (Electra(V, SEQ, dim=16, depth=1, heads=2, generator_share=0.5), tokens()),
    # the MAE family (mae-digits)
    "mae": lambda: (MaskedAutoencoding(mae(), RandomMask()), images()),
    "mae-replace": lambda: (MaskedTokenOptimization(mae(hide="replace"), recalibrate=False), images()),
    "mto": lambda: (MaskedTokenOptimization(mae(hide="replace")), images()),
    "hpm": lambda: (HardPatchMining(mae(), steps=6), images()),
    "lut": lambda: (UnmaskedTokenLearning(mae(), hidden=16, proj_dim=8), images()),
    "mr-mae": lambda: (MimicBeforeReconstruct(mae(), MaskedEncoder(mae_config())), images()),
    "maskalign": lambda: (MaskAlign(mae_config(), MaskedEncoder(mae_config())), images()),
    "dmjd": lambda: (DisjointMaskingJointDistillation(mae()), images()),
    "mfm": lambda: (MaskedFrequencyModeling(mae_config()), images()),
    "selective": lambda: (SelectiveMaskedAutoencoding(mae()), images()),
    "umd": lambda: (UnifiedMaskedDiffusion(mae()), images()),
    # videos (videomae-digits)
    "videomae": lambda: (VideoMaskedAutoencoding(video_model(), ratio=0.75), videos()),
    "videomae-v2": lambda: (VideoMaskedAutoencoding(video_model(), ratio=0.75, decoder_ratio=0.5), videos()),
    "crossvideo": lambda: (CrossVideoMAE(video_model(), ratio=0.75, hidden=16, proj_dim=8), videos()),
    # point clouds (pointmae-shapes)
    "pointmae": lambda: (PointMAE(point_encoder()), points()),
    "pointbert": lambda: (point_bert(), points()),
    "pointcmae": lambda: (PointCMAE(point_encoder()), points()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_objective_trains_with_one_host_sync_per_logged_step(name):
    objective, data = CASES[name]()
    seen = assert_sync_budget(objective, data, steps=6, log_every=3)
    assert seen.count == 2, seen.report()  # the trainer's own read at steps 3 and 6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(CASES))
def test_on_a_gpu_every_read_of_the_device_counts(name):
    """On a GPU a read counts wherever it is made, host-side mask code included: this is where an
    objective that hands the encoder a mask on the device, not the masker's host mask, shows."""
    objective, data = CASES[name]()
    assert_sync_budget(objective.cuda(), data, steps=6, log_every=3)


@pytest.mark.parametrize("name", ["mtm-per-segment-weights", "diffusion-coupled", "electra", "umd", "pointcmae",
                                  "ntp-masked-thought"])
def test_objective_metrics_are_detached_scalar_tensors(name):
    objective, data = CASES[name]()
    with count_host_syncs() as seen:
        out = objective(data, gen(6))
    assert seen.count == 0, seen.report()
    assert out.loss.ndim == 0 and out.loss.requires_grad
    for key, value in out.metrics.items():
        assert torch.is_tensor(value) and value.ndim == 0 and not value.requires_grad, key


def test_the_budget_counts_a_read_in_the_step():
    """The check itself: one `.item()` per step in an objective is caught."""

    class Reads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, batch, generator=None):
            loss = (self.w * batch["x"]).mean()
            return loss, {"loss": loss.item()}

    with pytest.raises(AssertionError, match=r"8 host syncs in 6 steps, at most 2 allowed.*\n\s+6 x .*forward \(item"):
        assert_sync_budget(Reads(), {"x": torch.ones(4, 3)}, steps=6, log_every=3)


def test_reads_are_counted_per_logged_or_checkpointed_step():
    assert read_steps(6, 3) == 2 and read_steps(7, 3) == 3 and read_steps(2, 50) == 1
    assert read_steps(6, 3, checkpoint_every=2) == 4  # 2, 3, 4, 6


def test_a_checkpoint_between_logged_steps_costs_one_check():
    objective, data = CASES["mae"]()
    seen = assert_sync_budget(objective, data, steps=6, log_every=3, checkpoint_every=2)
    assert seen.count == 4, seen.report()


def test_the_counter_restores_the_tensor_methods():
    t = torch.tensor(2.5)
    with count_host_syncs() as seen:
        assert bool(t) and float(t) == 2.5 and int(t) == 2 and t.item() == 2.5 and t.tolist() == 2.5
        [0, 1, 2][torch.tensor(1)]
    assert [r.method for r in seen.reads] == ["__bool__", "__float__", "__int__", "item", "tolist", "__index__"]
    assert "item" not in torch.Tensor.__dict__ and "__bool__" not in torch.Tensor.__dict__
    with count_host_syncs() as again:
        pass
    assert again.reads == [] and t.item() == 2.5
