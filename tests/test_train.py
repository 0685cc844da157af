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


# checkpoints: what is whole, what is skipped, what is refused ------------------------------------


def two_checkpoints(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, keep=3)
    Trainer(objective(), data(), cfg, tmp_path, RUN, progress=False).fit()
    return list_checkpoints(tmp_path)


def _drop(ckpt, name):
    (ckpt / name).unlink()


def _truncate_state(ckpt, name):
    (ckpt / "state.json").write_text((ckpt / "state.json").read_text()[:50])


def _edit_state(ckpt, name):
    state = json.loads((ckpt / "state.json").read_text())
    state["step"] = 40  # a flipped digit: every file still matches its checksum
    (ckpt / "state.json").write_text(json.dumps(state))


def _forget_checksums(ckpt, name):
    state = json.loads((ckpt / "state.json").read_text())
    del state["files"], state["state_sha256"]
    (ckpt / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("damage,needle", [
    (lambda c: _drop(c, "optimizer.safetensors"), "optimizer.safetensors is missing"),
    (lambda c: _drop(c, "config.json"), "config.json is missing"),
    (lambda c: _truncate_state(c, ""), "state.json unreadable"),
    (lambda c: _edit_state(c, ""), "state.json does not match its checksum"),
    (lambda c: _forget_checksums(c, ""), "lacks its step or its file checksums"),
])
def test_a_damaged_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage, needle):
    ckpts = two_checkpoints(tmp_path)
    damage(ckpts[-1])
    with pytest.warns(UserWarning, match=needle):
        assert latest_checkpoint(tmp_path) == ckpts[0]
    t = Trainer(objective(seed=5), data(), TrainConfig(steps=4, batch_size=8, checkpoint_every=2), tmp_path, RUN,
                progress=False)
    with pytest.warns(UserWarning, match=needle):
        assert t.resume() and t.step == 2


def test_when_every_checkpoint_is_broken_resume_refuses_to_start_over(tmp_path):
    ckpts = two_checkpoints(tmp_path)
    for c in ckpts:
        _drop(c, "model.safetensors")
    t = Trainer(objective(), data(), TrainConfig(steps=6, batch_size=8), tmp_path, RUN, progress=False)
    with pytest.raises(UnmaskError, match=r"no checkpoint in .* is whole \(step_00000004: model.safetensors is"):
        with pytest.warns(UserWarning, match="skipping checkpoint"):
            t.fit()
    assert list_checkpoints(tmp_path) == ckpts  # nothing overwritten


def model_run(layout=LAYOUT, vocab=V, recipe="toy"):
    return {"recipe": recipe, "model": ModelConfig(vocab, layout, dim=16, depth=1, heads=2).to_dict()}


@pytest.mark.parametrize("other,needle", [
    (model_run(recipe="other"), "recipe is 'toy' there, 'other' here"),
    (model_run(vocab=V + 1), f"model vocab_size is {V} there, {V + 1} here"),
    (model_run(layout=Layout.grid(3, 4)), "model layout is {'segments': [['tokens', 'seq', [12]]]} there"),
])
def test_a_checkpoint_of_another_recipe_vocabulary_or_layout_is_refused_by_name(tmp_path, other, needle):
    Trainer(objective(), data(), TrainConfig(steps=2, batch_size=8), tmp_path, model_run(), progress=False).fit()
    t = Trainer(objective(), data(), TrainConfig(steps=4, batch_size=8), tmp_path, other, progress=False)
    with pytest.raises(UnmaskError, match="another recipe or model") as e:
        t.fit()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_weights_of_another_shape_are_refused_by_name(tmp_path):
    Trainer(objective(), data(), TrainConfig(steps=2, batch_size=8), tmp_path, RUN, progress=False).fit()
    torch.manual_seed(0)
    wider = MaskedTokenModeling(MaskedTokenModel(ModelConfig(V, LAYOUT, dim=32, depth=1, heads=2)))
    with pytest.raises(UnmaskError, match=r"does not fit the model: \S+ has shape \(.*16\) there, \(.*32\) here"):
        Trainer(wider, data(), TrainConfig(steps=4, batch_size=8), tmp_path, RUN, progress=False).fit()


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=8, checkpoint_every=2)
    t = Trainer(objective(), data(), cfg, tmp_path, RUN, progress=False)
    t.fit(stop_after=5)  # checkpoints 2 and 4, weights of step 5 in memory
    kept = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)[-1].iterdir()}
    with torch.no_grad():
        t.objective.model.head.proj.weight[0, 0] = math.inf
    with pytest.raises(UnmaskError, match=r"the loss is nan at step 5; training stopped, the last good checkpoint "
                                          r".*step_00000004 is kept"):
        t.fit(resume=False)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_00000004" and {p.name: p.read_bytes() for p in ckpt.iterdir()} == kept
    assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpt)[0]["model"].values())


class SqrtAtZero(torch.nn.Module):
    """A finite loss (0) whose gradient is not finite (d sqrt|w| / dw at 0)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def forward(self, batch, generator=None):
        loss = self.w.abs().sum().sqrt()
        return loss, {"loss": loss.item()}


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_a_non_finite_gradient_stops_the_run_before_the_weights_change(tmp_path, grad_clip):
    model = SqrtAtZero()
    t = Trainer(model, data(), TrainConfig(steps=3, batch_size=8, grad_clip=grad_clip), tmp_path, RUN, progress=False)
    with pytest.raises(UnmaskError, match="the gradient norm is nan at step 0; training stopped, before any"):
        t.fit()
    assert torch.equal(model.w, torch.zeros(3))


def test_a_save_killed_halfway_leaves_nothing_that_loads_and_the_next_save_cleans_up(tmp_path):
    tensors = {"model": {"w": torch.arange(4.0)}}
    save_checkpoint(tmp_path, 3, tensors, RUN, {})
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_00000009").mkdir()  # killed while writing step 9
    (root / ".tmp-step_00000009" / "model.safetensors").write_bytes(b"half")
    (root / "step_00000003").rename(root / ".tmp-old-step_00000003")  # killed while replacing step 3
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 5, {"model": {"w": torch.ones(4)}}, RUN, {}, keep=3)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000003", "step_00000005"]
    assert torch.equal(load_checkpoint(root / "step_00000003")[0]["model"]["w"], torch.arange(4.0))


def test_saving_a_step_again_replaces_it_whole(tmp_path):
    save_checkpoint(tmp_path, 3, {"model": {"w": torch.zeros(2)}}, RUN, {})
    save_checkpoint(tmp_path, 3, {"model": {"w": torch.ones(2)}}, RUN, {})
    (ckpt,) = list_checkpoints(tmp_path)
    assert torch.equal(load_checkpoint(ckpt)[0]["model"]["w"], torch.ones(2))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003"]


def test_resuming_a_finished_run_rewrites_nothing(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8)
    Trainer(objective(), data(), cfg, tmp_path, RUN, progress=False).fit()
    before = {p.name: p.stat().st_ino for p in latest_checkpoint(tmp_path).iterdir()}
    again = Trainer(objective(seed=4), data(), cfg, tmp_path, RUN, progress=False)
    again.fit()
    assert again.step == 3
    assert {p.name: p.stat().st_ino for p in latest_checkpoint(tmp_path).iterdir()} == before


def test_loading_never_unpickles(tmp_path):
    """No module loads pickles, and a checkpoint reads only safetensors and JSON: a pickle placed in
    it (which would create a file when unpickled) is never opened."""
    import pathlib
    import re

    import unmask

    for path in pathlib.Path(unmask.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
    Trainer(objective(), data(), TrainConfig(steps=1, batch_size=8), tmp_path, RUN, progress=False).fit()
    ckpt = latest_checkpoint(tmp_path)
    torch.save(_Bomb(tmp_path / "exploded"), ckpt / "extra.pt")
    with pytest.raises(UnmaskError, match="extra.pt is in the folder but not in state.json"):
        load_checkpoint(ckpt)
    with pytest.raises(UnmaskError, match="no checkpoint .* is whole"):
        Trainer(objective(), data(), TrainConfig(steps=2, batch_size=8), tmp_path, RUN, progress=False).fit()
    assert not (tmp_path / "exploded").exists()


class _Bomb:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_micro_batches_resume_bit_exact(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, micro_batch=4, checkpoint_every=2, log_every=1)
    whole = Trainer(objective(), data(), cfg, tmp_path / "whole", RUN, progress=False)
    whole.fit()
    Trainer(objective(), data(), cfg, tmp_path / "broken", RUN, progress=False).fit(stop_after=3)
    resumed = Trainer(objective(seed=3), data(), cfg, tmp_path / "broken", RUN, progress=False)
    resumed.fit()
    for k, v in whole.objective.state_dict().items():
        assert torch.equal(v, resumed.objective.state_dict()[k]), k
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (tmp_path / "broken" / "metrics.csv").read_text()
    one = Trainer(objective(), data(), TrainConfig(steps=4, batch_size=8), tmp_path / "one", RUN, progress=False)
    one.fit()  # one forward pass of 8 draws other masks than two of 4
    assert not torch.equal(one.objective.model.head.proj.weight, whole.objective.model.head.proj.weight)


def test_beta2_of_one_is_refused():
    with pytest.raises(UnmaskError, match=r"beta2=1.0 is out of range; beta2 must be in \[0.0, 1.0\)"):
        Trainer(objective(), data(), TrainConfig(beta2=1.0), "unused", RUN)
