"""Checkpoints: `model.safetensors` + `config.json` + `state.json` (+ `optimizer.safetensors`,
`ema.safetensors`), nothing pickled: loading reads safetensors and JSON only, never `torch.load`.

A checkpoint is a folder `checkpoints/step_00001234/`. It is written whole into a hidden temporary
folder, every file fsynced, then renamed into place and the parent folder fsynced, so a crash leaves
either the old set or the new one (and at worst a hidden `.tmp-*` folder, removed by the next save).
`state.json` is the manifest: it lists every other file of the folder with its size and SHA-256
(read in chunks, never whole into memory), and its own checksum. A folder is whole only if it holds
exactly the files its manifest lists, each matching; anything else (a missing, changed or extra file,
a manifest without its checksum) is skipped, with a warning, in favour of the previous checkpoint. A
write that fails (a full disk) removes its temporary folder and leaves the earlier checkpoints as
they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UnmaskError

PREFIX = "step_"


REQUIRED = ("model.safetensors", "config.json")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streams in chunks


def _state_digest(state: dict) -> str:
    """SHA-256 of state.json's content without its own digest (a flipped step or seed is caught)."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


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
    for stale in root.glob(".tmp-*"):  # left by a run killed while saving
        kept = root / stale.name.removeprefix(".tmp-old-")
        if stale.name.startswith(".tmp-old-") and not kept.exists():
            os.replace(stale, kept)  # killed between the two renames below: the old one goes back
        else:
            shutil.rmtree(stale, ignore_errors=True)
    try:
        _write_folder(tmp, tensors, config, state, step)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise UnmaskError(f"could not write checkpoint {final}: {reason}; the earlier checkpoints are kept") from None
    if final.exists():  # the same step again: move the old one aside first, never delete it first
        old = root / f".tmp-old-{PREFIX}{step:08d}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(root)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_folder(tmp: Path, tensors: dict, config: dict, state: dict, step: int) -> None:
    """Every file of a checkpoint into `tmp`, fsynced, with the manifest last."""
    tmp.mkdir()
    files, sizes = {}, {}
    for name, tensor_dict in tensors.items():
        path = tmp / f"{name}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensor_dict.items()}, str(path))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for path in sorted(tmp.iterdir()):
        _fsync(path)
        files[path.name], sizes[path.name] = _sha256(path), path.stat().st_size
    state = {**state, "step": step, "files": files, "sizes": sizes}
    state["state_sha256"] = _state_digest(state)
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    _fsync(tmp / "state.json")
    _fsync(tmp)


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(ckpt: Path) -> str | None:
    """None if the checkpoint is whole (exactly the files its manifest lists, each of the listed size
    and checksum, and the manifest's own checksum right), else what is wrong with it."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as e:
        return f"state.json unreadable ({e.__class__.__name__})"
    if not (isinstance(state, dict) and isinstance(state.get("files"), dict) and isinstance(state.get("step"), int)
            and not isinstance(state["step"], bool)):
        return "state.json lacks its step or its file checksums"
    if "state_sha256" not in state:
        return "state.json has no checksum of its own"
    if state["state_sha256"] != _state_digest(state):
        return "state.json does not match its checksum"
    for name in REQUIRED:
        if name not in state["files"]:
            return f"state.json lists no {name}"
    try:
        present = {p.name for p in ckpt.iterdir()} - {"state.json"}
    except OSError as e:
        return f"the folder cannot be listed ({e.__class__.__name__})"
    listed = set(state["files"])
    if present - listed:
        return f"{sorted(present - listed)[0]} is in the folder but not in state.json"
    sizes = state.get("sizes") if isinstance(state.get("sizes"), dict) else {}
    for name, digest in state["files"].items():
        path = ckpt / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return f"{name} is missing"
        if name in sizes and path.stat().st_size != sizes[name]:
            return f"{name} has {path.stat().st_size} bytes, not the {sizes[name]} state.json lists"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def newest_whole(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest whole checkpoint or None, [(broken checkpoint newer than it, what is wrong)])."""
    broken = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt, broken
        broken.append((ckpt, problem))
    return None, broken


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole checkpoint; broken ones are skipped with a warning."""
    ckpt, broken = newest_whole(run_dir)
    for path, problem in broken:
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return ckpt


def load_checkpoint(ckpt: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict, dict]:
    """(tensors by file stem, config, state) of a verified checkpoint."""
    ckpt = Path(ckpt)
    problem = verify(ckpt) if ckpt.is_dir() else "it does not exist"
    if problem:
        raise UnmaskError(f"checkpoint {ckpt} cannot be loaded: {problem}")
    try:
        state = json.loads((ckpt / "state.json").read_text())
        tensors = {Path(name).stem: load_file(str(ckpt / name)) for name in sorted(state["files"])
                   if name.endswith(".safetensors")}
        config = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise UnmaskError(f"checkpoint {ckpt} cannot be loaded: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UnmaskError(f"checkpoint {ckpt} cannot be loaded: config.json is not a JSON object")
    return tensors, config, state


def find_checkpoint(run_dir: Path) -> Path:
    """The newest whole checkpoint of a run folder (broken newer ones skipped with a warning), or an
    error that says why there is none."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UnmaskError(f"run folder {run_dir} is a file, not a folder")
    if not run_dir.is_dir():
        raise UnmaskError(f"run folder {run_dir} does not exist")
    ckpt, broken = newest_whole(run_dir)
    if ckpt is None:
        root = run_dir / "checkpoints"
        if broken:
            path, problem = broken[0]
            more = f"; {len(broken) - 1} more broken" if len(broken) > 1 else ""
            raise UnmaskError(f"no usable checkpoint in {root}: {path.name}: {problem}{more}")
        raise UnmaskError(f"no usable checkpoint in {root}")
    for path, problem in broken:
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return ckpt
