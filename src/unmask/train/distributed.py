"""Parallelism, applied in one place: the process group, the wrapping, the batch split and the work
only rank 0 does. Model code is written for one device and never knows.

    torchrun --standalone --nproc_per_node=2 -m unmask train digits --out runs/d2          # 2 CPU processes, gloo
    torchrun --standalone --nproc_per_node=8 -m unmask train digits train.parallel=fsdp       # 8 GPUs, NCCL, FSDP2
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=R --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29500 -m unmask train digits --out /shared/runs/d16           # 2 nodes x 8 GPUs

The Trainer calls this module in one order:
1. `setup()`: read RANK, LOCAL_RANK and WORLD_SIZE (torchrun sets them) and start the process group:
   NCCL on `cuda:LOCAL_RANK` when the node has a GPU per process, gloo on the CPU otherwise. A plain
   `unmask train` (no torchrun) trains where the recipe built the model, the CPU.
2. `wrap(objective, parallel, device)`: move the objective to the device, then either
   - `ddp`: every process holds all the weights; DDP averages the gradients in the backward pass; or
   - `fsdp` (FSDP2, `fully_shard`): each block of every `nn.ModuleList`, then the root, is sharded, so a
     process holds 1/W of the weights, gradients and optimizer state and gathers a block's weights
     just before it runs. FSDP shards a copy: the objective passed in keeps plain tensors and gets
     the final weights back at the end (`gather_state`), so evaluation needs no process group.
3. The optimizer is built on the wrapped module's parameters (under FSDP, DTensor shards).
4. `micro_batches(...)`: a step's global batch (the same indices on every process) is cut into M
   micro-batches numbered 0..M-1, and process r takes the r-th contiguous run of M / W of them. Each
   micro-batch draws its masks from the generator (seed, step, its number), so the draws of a step do
   not depend on W: 2 processes x b examples give the same step as 1 process x 2b examples with
   `micro_batch=b` (equal up to float summation order).
5. `gather_state(...)`: every process takes part in gathering FSDP shards into whole tensors; only
   rank 0 writes checkpoints and metrics and prints (`print0`).
6. `teardown()`: when `Trainer.fit` ends, the final weights are gathered into the objective, the
   process group ends and every process but rank 0 exits. Evaluation, figures and reports that a
   recipe runs after `fit` therefore run once, on rank 0, with no change to the recipe. (A recipe
   that trains twice, a teacher then a student, trains the second time on rank 0 alone, with a warning.)
A lost peer: every process waits at most `timeout` seconds (`train.timeout`, the process group's
timeout) for the others at a collective, instead of PyTorch's 30 minutes. A collective that fails
because another process died, froze or left (gloo's "Connection closed by peer", its timeout, NCCL's
errors) becomes one `UnmaskError` line, "lost contact with another process ...", at the places the
Trainer meets the others: `gradient_sync` (the forward and backward passes, where DDP broadcasts
buffers and all-reduces gradients and FSDP gathers and scatters), `gather_over_processes` (the
logged metrics), `full_tensor` (gathering a checkpoint) and `teardown`. Those take the step, when
given, for the message. (NCCL's watchdog may end a process on a timeout before Python sees it.)
On a GPU the forward pass runs under bf16 autocast (`autocast`) and weights, gradients and optimizer
state stay float32; on a CPU everything is float32 unless `precision=bf16` asks for autocast there
too (`precision=fp32` keeps a GPU in float32). One process starts no process group and wraps
nothing. Bit-exact resuming holds on the CPU; on a GPU some kernels (atomic adds) are not
deterministic, so a resumed run matches an unbroken one only to rounding.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UnmaskError

PARALLEL = ("ddp", "fsdp")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Processes:
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise UnmaskError(f"environment variable {name}={value!r} is not an integer") from None


_ENDED = False  # set once training ended: the workers are gone and rank 0 carries on alone
_TIMEOUT = 300.0  # seconds a collective waits for the others, as `setup` set it


def world_size() -> int:
    """Processes of this run: WORLD_SIZE under torchrun, else 1 (and 1 once training has ended)."""
    if dist.is_initialized():
        return dist.get_world_size()
    return 1 if _ENDED else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    if dist.is_initialized():
        return dist.get_rank()
    return 0 if _ENDED else _env_int("RANK", 0)


def is_main() -> bool:
    """True on rank 0, the one process that prints, logs, writes checkpoints and evaluates."""
    return rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs)


def setup(device: torch.device | None = None, timeout: float = 300.0) -> Processes:
    """Start the process group once. A process that torchrun did not start trains on `device` (the
    objective's own). Under torchrun every process takes `cuda:LOCAL_RANK` when this node has a GPU
    for each of its processes (NCCL), else the CPU (gloo); `--nproc_per_node=1` is one GPU.
    `timeout`: seconds a process waits for the others, at the start and at every collective."""
    global _TIMEOUT
    world = world_size()
    if _ENDED:
        warnings.warn("a second training in this run goes on in one process: the others left when the "
                      "first one ended", stacklevel=3)
    if "LOCAL_RANK" not in os.environ and world == 1:
        return Processes(0, 0, 1, device or torch.device("cpu"))
    local = 0 if _ENDED else _env_int("LOCAL_RANK", 0)
    per_node = _env_int("LOCAL_WORLD_SIZE", world)
    if torch.cuda.is_available() and torch.cuda.device_count() >= per_node:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        _TIMEOUT = float(timeout)
        try:
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None,
                                    timeout=timedelta(seconds=timeout))
        except dist.DistError as e:  # the rendezvous: a process that never came
            raise UnmaskError(f"could not reach the other processes (this is rank {rank()} of {world}) within "
                              f"train.timeout={timeout:g} s: {_first_line(e)}") from e
    return Processes(rank(), local, world, device)


# a collective's error that means another process is gone or frozen, not a bug in this one
_LOST = ("timed out", "timeout", "connection closed", "connection reset", "connection refused", "broken pipe",
         "aborted", "nccl error", "remote process exited")


def _first_line(error: BaseException) -> str:
    """The first sentence of an error, without the C++ source location gloo puts in front."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")


def lost_peer(error: BaseException) -> bool:
    """Whether `error`, raised while processes talk, says that another process died, froze or left."""
    if not isinstance(error, RuntimeError):  # torch.distributed's DistError is a RuntimeError too
        return False
    text = str(error).lower()
    return isinstance(error, (dist.DistBackendError, dist.DistNetworkError)) or any(s in text for s in _LOST)


def lost_contact(error: BaseException, step: int | None = None) -> UnmaskError:
    """The one line a lost peer ends the run with."""
    first = _first_line(error)
    timed_out = "timed out" in first.lower() or "timeout" in first.lower()
    why = f"no reply within train.timeout={_TIMEOUT:g} s ({first})" if timed_out else first
    at = f" at step {step}" if step is not None else ""
    return UnmaskError(f"lost contact with another process (this is rank {rank()} of {world_size()}){at}: "
                       f"{why}; the last checkpoint is kept")


@contextlib.contextmanager
def peers(step: int | None = None):
    """Within the block, a collective that fails because another process died or froze raises
    `lost_contact` (naming `step` when given); every other error passes unchanged."""
    try:
        yield
    except RuntimeError as e:
        if dist.is_initialized() and lost_peer(e):
            raise lost_contact(e, step) from e
        raise


def teardown() -> None:
    """End the process group once training ends; what follows runs on rank 0 alone."""
    global _ENDED
    if dist.is_initialized():
        with peers():
            dist.barrier()
        dist.destroy_process_group()
        _ENDED = True


def wrap(objective: nn.Module, parallel: str, procs: Processes, precision: str = "auto") -> nn.Module:
    """The module to train: the objective itself (one process), DDP around it, or an FSDP2-sharded
    copy of it. Blocks are sharded before the root so each block's weights are gathered alone."""
    if parallel not in PARALLEL:
        raise UnmaskError(f"parallel={parallel!r} is not allowed; parallel must be one of {', '.join(PARALLEL)}")
    objective.to(procs.device)
    if procs.world == 1:
        return objective
    if parallel == "ddp":
        ids = [procs.device.index] if procs.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    for tensor in objective.state_dict().values():  # DDP does this itself: every process starts from rank 0's weights
        dist.broadcast(tensor, src=0)
    sharded = copy.deepcopy(objective)
    # bf16 compute and fp32 gradient reduction on a GPU, like autocast for DDP
    policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) \
        if procs.device.type == "cuda" and uses_bf16(procs.device, precision) else None
    kwargs = {"mp_policy": policy} if policy else {}
    for module in list(sharded.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, **kwargs)
    fully_shard(sharded, **kwargs)
    return sharded


def unwrap(module: nn.Module) -> nn.Module:
    """The module whose state_dict has the objective's own key names."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def micro_batches(batch_size: int, micro_batch: int, world: int, rank: int) -> tuple[int, range]:
    """(examples per micro-batch, numbers of this process's micro-batches). micro_batch 0: one
    micro-batch per process. Micro-batch j holds examples [j * size, (j + 1) * size) of the batch."""
    unit = (micro_batch or 1) * world
    if batch_size % unit:
        what = f"micro_batch x processes = {micro_batch} x {world}" if micro_batch else "the processes"
        raise UnmaskError(f"batch_size={batch_size} must be a multiple of {what} = {unit}")
    size = micro_batch or batch_size // world
    per = batch_size // size // world
    return size, range(rank * per, (rank + 1) * per)


@contextlib.contextmanager
def gradient_sync(module: nn.Module, sync: bool, step: int | None = None):
    """Reduce gradients across processes only in the last micro-batch's backward pass. Wraps the
    forward and backward pass of a micro-batch, so a peer lost there is `lost_contact` at `step`."""
    with peers(step):
        if isinstance(module, nn.parallel.DistributedDataParallel) and not sync:
            with module.no_sync():
                yield
            return
        if hasattr(module, "set_requires_gradient_sync"):  # an FSDP2 module
            module.set_requires_gradient_sync(sync)
        yield


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether the forward pass computes in bf16: `auto` on a GPU, `bf16` anywhere, `fp32` never.
    A CPU computes in float32 unless asked: bf16 pays there only with bf16 matrix units (AMX, Intel
    Xeon since Sapphire Rapids), and results then differ from float32 by bf16 rounding."""
    if precision not in PRECISIONS:
        raise UnmaskError(f"precision={precision!r} is not allowed; precision must be one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast where `uses_bf16`; nothing otherwise. Weights, gradients and optimizer state
    stay float32 either way, and the backward pass runs outside it."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def gather_over_processes(values: torch.Tensor, procs: Processes, step: int | None = None) -> torch.Tensor:
    """[W, *shape]: every process's `values` (on this process's device), row r from rank r. Every
    process must call it. Nothing is read to the host: the caller reads the result once."""
    if procs.world == 1:
        return values.unsqueeze(0)
    rows = [torch.empty_like(values) for _ in range(procs.world)]
    with peers(step):
        dist.all_gather(rows, values.contiguous())
    return torch.stack(rows)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor on the CPU; FSDP shards are gathered (every process must call it)."""
    if _is_dtensor(t):
        with peers():
            t = t.full_tensor()
    return t.detach().cpu()


def gather_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: full_tensor(v) for k, v in state.items()}


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `like`: sharded the same way if `like` is an FSDP shard."""
    if _is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)
    return full


def total_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain 0-dim tensor on the device (FSDP returns it as a DTensor, whose
    whole value every process gathers); never read to the host here."""
    return (norm.full_tensor() if _is_dtensor(norm) else norm).detach()
