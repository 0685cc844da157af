"""Several processes on gloo/CPU. 2 processes with b examples each must reach the weights of 1
process with 2b examples cut into two micro-batches of b (so both draw the same masks):

    torchrun --standalone --nproc_per_node=2 -m unmask train digits ...      (DDP, the real command line)
    torch.multiprocessing.spawn of two Trainers with parallel=fsdp            (FSDP2, a toy model)

The reference runs on one thread, like each process (torchrun sets OMP_NUM_THREADS=1). Then the runs
may differ only by the order of float sums in the gradient all-reduce; we measured no difference at
all after 4 steps (DDP and FSDP) and allow 1e-6 (lr 2e-3 to 3e-3: a thousandth of one step's move).
With two threads in the reference, the gaps were 7e-9 (DDP) and 1.2e-6 (FSDP).
"""

import dataclasses
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import threads
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.train import TrainConfig, Trainer
from unmask.train.checkpoint import latest_checkpoint
from unmask.train.distributed import micro_batches
from unmask.train.trainer import step_generator

TINY = ["train.steps=4", "train.warmup=2", "model.dim=16", "model.depth=1", "model.heads=2", "train.batch_size=16",
        "eval.n_samples=10", "sampler.steps=1"]
TOLERANCE = 1e-6


def assert_same_training(ckpt, reference, start):
    """Weights and optimizer state of two checkpoints agree within TOLERANCE, and training moved the
    weights far more than that (so the agreement says something)."""
    ours, theirs = load_file(ckpt / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    gap = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    moved = max((theirs[k] - start[k]).abs().max().item() for k in theirs)
    assert gap <= TOLERANCE, f"weights differ by {gap:.3g}"
    assert moved > 1000 * TOLERANCE
    opt_ours, opt_theirs = load_file(ckpt / "optimizer.safetensors"), load_file(reference / "optimizer.safetensors")
    assert opt_ours.keys() == opt_theirs.keys()
    for k in opt_ours:
        torch.testing.assert_close(opt_ours[k], opt_theirs[k], rtol=1e-4, atol=TOLERANCE)
    return gap


@pytest.mark.dist
def test_torchrun_two_processes_equal_one_with_twice_the_batch(tmp_path):
    from unmask.data import digits
    from unmask.recipes import get

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "unmask", "train", "digits", "--out", str(tmp_path / "two"), "--no-progress", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    # meanwhile, the reference in this process: batch 16 as two micro-batches of 8, seeded as the CLI seeds
    recipe = get("digits")().with_overrides(TINY)
    objective = recipe.objective()
    start = {k: v.clone() for k, v in objective.state_dict().items()}
    train_cfg = dataclasses.replace(recipe.settings.train, micro_batch=8)
    with threads(1):
        Trainer(objective, {"tokens": digits.load("train").tokens}, train_cfg, tmp_path / "one",
                recipe.run_config(), progress=False).fit()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("wrote ") == 1 and out.count("label_accuracy") == 1  # rank 0 alone evaluates and talks
    ckpt, reference = latest_checkpoint(tmp_path / "two"), latest_checkpoint(tmp_path / "one")
    assert ckpt.name == reference.name == "step_00000004"
    print(f"ddp: largest weight gap {assert_same_training(ckpt, reference, start):.3g}")
    loss = [r.split(",")[2] for r in (tmp_path / "two" / "metrics.csv").read_text().splitlines()[1:]]
    loss_ref = [r.split(",")[2] for r in (tmp_path / "one" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(loss) == len(loss_ref) == 1
    assert float(loss[0]) == pytest.approx(float(loss_ref[0]), rel=1e-5)  # the logged loss is the global mean


RUN = {"recipe": "toy", "model": {"v": 6}}
TOY = dict(steps=4, batch_size=16, lr=3e-3, warmup=2, ema=0.5)


def toy_objective(seed: int) -> MaskedTokenModeling:
    torch.manual_seed(seed)
    return MaskedTokenModeling(MaskedTokenModel(ModelConfig(6, Layout.seq(12), dim=16, depth=2, heads=2)))


def toy_data() -> dict:
    return {"tokens": torch.randint(0, 6, (40, 12), generator=torch.Generator().manual_seed(0))}


def _spawned(rank: int, world: int, port: int, run_dir: str, parallel: str, stop_after: int | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), CUDA_VISIBLE_DEVICES="")  # gloo on the CPU, like the reference
    torch.set_num_threads(1)
    # each process starts from other weights: the wrap must start every one from rank 0's
    objective = toy_objective(seed=rank)
    cfg = TrainConfig(**TOY, parallel=parallel, checkpoint_every=2)
    Trainer(objective, toy_data(), cfg, run_dir, RUN, progress=False).fit(stop_after=stop_after)


def spawn_two(run_dir, parallel: str, stop_after: int | None = None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_spawned, args=(2, port, str(run_dir), parallel, stop_after), nprocs=2, join=True)


@pytest.mark.dist
@pytest.mark.parametrize("parallel", ["fsdp"])
def test_spawned_processes_equal_one_with_twice_the_batch(parallel, tmp_path):
    spawn_two(tmp_path / "two", parallel)
    one = toy_objective(seed=0)
    start = {k: v.clone() for k, v in one.state_dict().items()}
    with threads(1):
        Trainer(one, toy_data(), TrainConfig(**TOY, micro_batch=8, checkpoint_every=2), tmp_path / "one", RUN,
                progress=False).fit()
    ckpt, reference = latest_checkpoint(tmp_path / "two"), latest_checkpoint(tmp_path / "one")
    assert ckpt.name == reference.name == "step_00000004"
    print(f"{parallel}: largest weight gap {assert_same_training(ckpt, reference, start):.3g}")
    ema, ema_ref = load_file(ckpt / "ema.safetensors"), load_file(reference / "ema.safetensors")
    assert max((ema[k] - ema_ref[k]).abs().max().item() for k in ema) <= TOLERANCE


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_parallel_run_stopped_and_resumed_equals_an_unbroken_one(parallel, tmp_path):
    spawn_two(tmp_path / "whole", parallel)
    spawn_two(tmp_path / "broken", parallel, stop_after=3)  # stops at step 3; the last checkpoint is step 2
    spawn_two(tmp_path / "broken", parallel)
    a, b = latest_checkpoint(tmp_path / "whole"), latest_checkpoint(tmp_path / "broken")
    assert a.name == b.name == "step_00000004"
    for name in ("model.safetensors", "optimizer.safetensors", "ema.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.parametrize("batch,micro,world", [(16, 0, 1), (16, 0, 2), (16, 8, 1), (16, 2, 2), (24, 3, 4), (6, 1, 3)])
def test_micro_batches_split_the_batch_exactly_once(batch, micro, world):
    got = [micro_batches(batch, micro, world, r) for r in range(world)]
    size = got[0][0]
    numbers = [j for _, mine in got for j in mine]
    assert all(s == size for s, _ in got) and len({len(m) for _, m in got}) == 1
    assert numbers == list(range(batch // size))  # contiguous runs, rank by rank, none twice
    assert (micro or batch // world) == size


@pytest.mark.parametrize("batch,micro,world,needle", [
    (15, 0, 2, "batch_size=15 must be a multiple of the processes = 2"),
    (16, 3, 1, "batch_size=16 must be a multiple of micro_batch x processes = 3 x 1 = 3"),
    (16, 4, 3, "micro_batch x processes = 4 x 3 = 12"),
])
def test_a_batch_that_does_not_split_is_a_clear_error(batch, micro, world, needle):
    with pytest.raises(UnmaskError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        micro_batches(batch, micro, world, 0)


def test_micro_batches_draw_from_their_own_streams():
    draws = [torch.rand(4, generator=step_generator(0, 5, micro=j)) for j in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(draws[0], torch.rand(4, generator=step_generator(0, 5)))  # micro-batch 0 is the step's own
    assert torch.equal(draws[2], torch.rand(4, generator=step_generator(0, 5, micro=2)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_training_under_bf16_autocast_follows_the_cpu_run(tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        objective = toy_objective(seed=0).to(device)
        Trainer(objective, toy_data(), TrainConfig(**TOY), tmp_path / device, RUN, progress=False).fit()
        assert all(v.dtype == torch.float32 and v.device.type == device for v in objective.state_dict().values())
        runs[device] = {k: v.cpu() for k, v in objective.state_dict().items()}
    gap = max((runs["cpu"][k] - runs["cuda"][k]).abs().max().item() for k in runs["cpu"])
    assert gap < 5e-3  # bf16 forward passes, 4 steps at lr 3e-3 (Adam moves each weight at most 1.2e-2)
