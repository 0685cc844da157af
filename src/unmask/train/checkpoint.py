"""Checkpoints: `model.safetensors` + `config.json` + `state.json` (+ `optimizer.safetensors`,
`ema.safetensors`), nothing pickled.

A checkpoint is a folder `checkpoints/step_00001234/`. It is written whole into a hidden temporary
folder, every file fsynced, then renamed into place, so a crash leaves either the old set or the
new one. `state.json` records each file's SHA-256; a folder whose files do not match is skipped,
with a warning, in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UnmaskError

PREFIX = "step_"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: temp file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    _fsync(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    config: dict,
    state: dict,
    keep: int = 2,
) -> Path:
    """Write `checkpoints/step_<step>/`: one safetensors file per entry of `tensors` (e.g. 'model',
    'optimizer', 'ema'), `config.json` and `state.json`. Keeps the newest `keep` folders."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    for name, tensor_dict in tensors.items():
        path = tmp / f"{name}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensor_dict.items()}, str(path))
        _fsync(path)
        files[path.name] = _sha256(path)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    _fsync(tmp / "config.json")
    files["config.json"] = _sha256(tmp / "config.json")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "files": files}, indent=2))
    _fsync(tmp / "state.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(ckpt: Path) -> str | None:
    """None if the checkpoint is whole, else what is wrong with it."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as e:
        return f"state.json unreadable ({e.__class__.__name__})"
    for name, digest in state.get("files", {}).items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole checkpoint; broken ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"skipping checkpoint {ckpt}: {problem}", stacklevel=2)
    return None


def load_checkpoint(ckpt: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict, dict]:
    """(tensors by file stem, config, state) of a verified checkpoint."""
    ckpt = Path(ckpt)
    problem = verify(ckpt) if ckpt.is_dir() else "it does not exist"
    if problem:
        raise UnmaskError(f"checkpoint {ckpt} cannot be loaded: {problem}")
    tensors = {p.stem: load_file(str(p)) for p in sorted(ckpt.glob("*.safetensors"))}
    config = json.loads((ckpt / "config.json").read_text())
    state = json.loads((ckpt / "state.json").read_text())
    return tensors, config, state


def find_checkpoint(run_dir: Path) -> Path:
    """The newest whole checkpoint of a run folder, or a clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UnmaskError(f"run folder {run_dir} does not exist")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise UnmaskError(f"no usable checkpoint in {run_dir / 'checkpoints'}")
    return ckpt
