import json
import math

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.train import TrainConfig, Trainer, learning_rate
from unmask.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from unmask.train.trainer import batch_indices

V = 6
LAYOUT = Layout.seq(12)


def objective(seed=0):
    torch.manual_seed(seed)
    return MaskedTokenModeling(MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=1, heads=2)))


def data():
    return {"tokens": torch.randint(0, V, (50, 12), generator=torch.Generator().manual_seed(0))}


RUN = {"recipe": "toy", "model": {"v": V}}


def test_learning_rate_warmup_then_cosine():
    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 60) == pytest.approx(0.55)
    assert learning_rate(cfg, 110) == pytest.approx(0.1)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(50, 8, seed=3, step=s) for s in range(25)])  # 200 = 4 epochs
    for epoch in range(4):
        assert sorted(seen[epoch * 50 : (epoch + 1) * 50].tolist()) == list(range(50))


def test_training_lowers_the_loss(tmp_path):
    t = Trainer(objective(), data(), TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, log_every=10),
                tmp_path, RUN, progress=False)
    t.fit()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    first, last = float(rows[1].split(",")[2]), float(rows[-1].split(",")[2])
    assert last < first
    assert len(list_checkpoints(tmp_path)) == 1


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    obj = objective()
    state = {k: v + 0.001 * torch.randn_like(v) if v.is_floating_point() else v for k, v in obj.state_dict().items()}
    save_checkpoint(tmp_path, 7, {"model": state}, RUN, {"note": 1})
    tensors, config, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert config == RUN and meta["step"] == 7 and meta["note"] == 1
    assert state.keys() == tensors["model"].keys()
    for k in state:
        assert torch.equal(state[k], tensors["model"][k]), k
    fresh = objective(seed=1)
    fresh.load_state_dict(tensors["model"])
    x = torch.randint(0, V + 1, (3, 12))
    obj.load_state_dict(state)
    assert torch.equal(obj.model(x), fresh.model(x))


def test_resumed_run_equals_unbroken_run(tmp_path):
    cfg = TrainConfig(steps=12, batch_size=8, lr=3e-3, warmup=3, checkpoint_every=4, ema=0.9)
    whole = Trainer(objective(), data(), cfg, tmp_path / "whole", RUN, progress=False)
    whole.fit()

    first = Trainer(objective(), data(), cfg, tmp_path / "broken", RUN, progress=False)
    first.fit(stop_after=5)  # dies at step 5; the last checkpoint is step 4
    second = Trainer(objective(seed=9), data(), cfg, tmp_path / "broken", RUN, progress=False)
    second.fit()
    assert second.step == whole.step == 12
    for (k, a), b in zip(whole.objective.state_dict().items(), second.objective.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    for k in whole.ema:
        assert torch.equal(whole.ema[k], second.ema[k]), k
    rows = (tmp_path / "broken" / "metrics.csv").read_text().splitlines()
    assert rows == (tmp_path / "whole" / "metrics.csv").read_text().splitlines()


def test_keeps_last_checkpoints_and_skips_a_corrupted_one(tmp_path):
    cfg = TrainConfig(steps=9, batch_size=8, checkpoint_every=3, keep=2)
    Trainer(objective(), data(), cfg, tmp_path, RUN, progress=False).fit()
    ckpts = list_checkpoints(tmp_path)
    assert [c.name for c in ckpts] == ["step_00000006", "step_00000009"]
    weights = ckpts[-1] / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        assert latest_checkpoint(tmp_path) == ckpts[0]
    with pytest.raises(UnmaskError, match="checksum"):
        load_checkpoint(ckpts[-1])


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8)
    Trainer(objective(), data(), cfg, tmp_path, RUN, progress=False).fit()
    other = {"recipe": "toy", "model": {"v": V + 1}}
    with pytest.raises(UnmaskError, match="another recipe or model"):
        Trainer(objective(), data(), TrainConfig(steps=4, batch_size=8), tmp_path, other, progress=False).fit()


def test_empty_data_and_nan_loss_are_clear_errors(tmp_path):
    with pytest.raises(UnmaskError, match="empty"):
        Trainer(objective(), {"tokens": torch.zeros(0, 12, dtype=torch.long)}, TrainConfig(), tmp_path, RUN)
    obj = objective()
    with torch.no_grad():
        obj.model.head.proj.bias.fill_(math.nan)
    t = Trainer(obj, data(), TrainConfig(steps=3, batch_size=8), tmp_path / "nan", RUN, progress=False)
    with pytest.raises(UnmaskError, match="step 0"):
        t.fit()


def test_checkpoint_files_are_json_and_safetensors_only(tmp_path):
    Trainer(objective(), data(), TrainConfig(steps=2, batch_size=8), tmp_path, RUN, progress=False).fit()
    ckpt = latest_checkpoint(tmp_path)
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 2 and set(state["files"]) == {"config.json", "model.safetensors", "optimizer.safetensors"}
