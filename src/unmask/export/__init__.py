"""Trained runs out to the formats their users load (DESIGN, "Data"): Hugging Face folders for the
runs whose network a `transformers` architecture computes exactly, safetensors + config.json for
every run. The folder is written whole into a hidden temporary folder beside OUT and then renamed,
so a crash leaves no half folder; an OUT that exists and is not empty is replaced only with `force`.

    unmask export runs/mlm-code --to hf out/mlm-bert       # BertForMaskedLM + its tokenizer
    unmask export runs/mae-digits --to hf out/mae          # ViTMAEForPreTraining; out/mae/encoder: ViTModel
    unmask export runs/digits --to unmask out/digits       # unmask.load("out/digits")

What maps onto what, the id mapping and what is refused: docs/export.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UnmaskError
from . import hf_mae, hf_mlm, native
from .native import load

FORMATS = ("hf", "unmask")
HF_FORMS = {"mlm-code": hf_mlm, "mae-digits": hf_mae}  # recipe -> the module that writes its HF folder
HF_HINT = "--to hf takes mlm-code (model.arch=bert) and mae-digits (variant mae, model.cls_token=true)"


def export_run(run_dir: str | Path, to: str, out: str | Path, force: bool = False) -> Path:
    """Write the trained run `run_dir` to the folder `out` in format `to` ('hf' or 'unmask'); returns `out`."""
    from ..recipes import load_run

    if to not in FORMATS:
        raise UnmaskError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UnmaskError(f"{out} is a file; give a folder to export to")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UnmaskError(f"{out} exists and is not empty; give another folder or --force to replace it")
    loaded = load_run(Path(run_dir), progress=False)
    if to == "unmask":
        write = native.write
    else:
        form = HF_FORMS.get(loaded.recipe.name)
        if form is None:
            raise UnmaskError(f"recipe {loaded.recipe.name!r} has no Hugging Face form; {HF_HINT}; "
                              "--to unmask takes every run")
        form.check(loaded)
        write = form.write
    with staged(out) as folder:
        write(loaded, folder)
    return out


class staged:
    """`with staged(out) as tmp:` fill `tmp`; on success it replaces `out`, on an error it is removed."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        return self.tmp

    def _open_up(self) -> None:
        """mkdtemp's folder is private (0700); the export is read like any folder the user makes."""
        umask = os.umask(0)
        os.umask(umask)
        for path in [self.tmp, *self.tmp.rglob("*")]:
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self._open_up()
        old = None
        if self.out.exists():  # moved aside first, so `out` is never missing a part
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


__all__ = ["FORMATS", "export_run", "load"]
