"""Reading a Hugging Face model folder to start a network from (`model.init=PATH`): safetensors and
`config.json` only. A folder that holds its weights only as `pytorch_model.bin` (a pickle, which can
run code when read) is refused, never read; `from_pretrained` is told `use_safetensors=True` and
`local_files_only=True` besides, so nothing is unpickled and nothing is downloaded.

What does not fit is a one-line `UnmaskError` naming the setting, the folder and the difference:
another architecture, a setting of its config (`num_attention_heads is 8 there, 2 here`), or a
parameter's shape (`... is [64, 32] there, the model needs [64, 16]`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UnmaskError


def need_transformers():
    """The `transformers` module, or an error that says how to get it."""
    try:
        import transformers
    except ImportError:
        raise UnmaskError("Hugging Face folders need `transformers`: pip install transformers") from None
    return transformers


def read_config(folder: str | Path, setting: str) -> dict:
    """config.json of a model folder whose weights are in safetensors; refuses pickled weights."""
    folder = Path(folder)
    where = f"{setting}={folder}"
    if not folder.is_dir():
        raise UnmaskError(f"{where} is not a folder; give a Hugging Face model folder "
                          "(config.json + model.safetensors)")
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickled:
            raise UnmaskError(f"{where} holds only {pickled[0]}, a pickle, which unmask never reads; "
                              "re-save it with save_pretrained(safe_serialization=True)")
        raise UnmaskError(f"{where} holds no model.safetensors")
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise UnmaskError(f"{where} holds no config.json") from None
    except ValueError as e:
        raise UnmaskError(f"{where}: config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise UnmaskError(f"{where}: config.json is not a JSON object")
    return config


def load_pretrained(folder: str | Path, class_name: str, model_type: str, setting: str):
    """`transformers.<class_name>.from_pretrained(folder)` from safetensors only, once its config says
    `model_type`; every parameter must come from the folder (none freshly initialised)."""
    config = read_config(folder, setting)
    where = f"{setting}={folder}"
    if config.get("model_type") != model_type:
        raise UnmaskError(f"{where} holds a {config.get('model_type')!r} model; this takes a {model_type!r} one "
                          f"({class_name})")
    cls = getattr(need_transformers(), class_name)
    try:
        model, info = cls.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                          output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise UnmaskError(f"{where} cannot be read: {str(e).strip().splitlines()[0]}") from None
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise UnmaskError(f"{where}: {missing[0]} is missing from its weights ({len(missing)} missing)")
    return model.eval()


def check_config(config, expected: dict[str, tuple[object, str]], where: str) -> None:
    """expected: {config key: (value here, the setting it comes from)}; the first difference is an error."""
    for key, (value, ours) in expected.items():
        theirs = getattr(config, key, None)
        if theirs != value:
            raise UnmaskError(f"{where}: {key} is {theirs!r} there, {value!r} here ({ours})")


def check_shapes(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], where: str,
                 at_least: tuple[str, ...] = ()) -> None:
    """Every parameter of `ours` (Hugging Face names) is in `theirs` with the same shape; those in
    `at_least` may have more rows (longer position tables), of which the first are read."""
    for key, want in ours.items():
        got = theirs.get(key)
        if got is None:
            raise UnmaskError(f"{where}: {key} is missing from its weights")
        fits = (got.shape[0] >= want.shape[0] and got.shape[1:] == want.shape[1:]) if key in at_least \
            else got.shape == want.shape
        if not fits:
            more = " or more rows" if key in at_least else ""
            raise UnmaskError(f"{where}: {key} is {list(got.shape)} there, the model needs {list(want.shape)}{more}")
