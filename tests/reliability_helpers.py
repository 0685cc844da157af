"""Helpers of the reliability tests: a whole tiny run to copy, and a crafted checkpoint re-signed so
that only the validation of what it holds (not its checksums) can refuse it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from unmask.train.checkpoint import _sha256, _state_digest, list_checkpoints


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def resign(ckpt: Path) -> None:
    """Recompute state.json's file list, sizes and own checksum after a crafted change."""
    state = json.loads((ckpt / "state.json").read_text())
    names = sorted(p.name for p in ckpt.iterdir() if p.name != "state.json")
    state["files"] = {n: _sha256(ckpt / n) for n in names}
    state["sizes"] = {n: (ckpt / n).stat().st_size for n in names}
    state["state_sha256"] = _state_digest(state)
    (ckpt / "state.json").write_text(json.dumps(state, indent=2))


def edit_config(run: Path, change) -> Path:
    """Apply `change(config)` to the newest checkpoint's config.json and re-sign it."""
    ckpt = list_checkpoints(run)[-1]
    config = json.loads((ckpt / "config.json").read_text())
    change(config)
    (ckpt / "config.json").write_text(json.dumps(config))
    resign(ckpt)
    return ckpt


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` but lock files (their holder line is the
    one thing a refused command may write)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}
