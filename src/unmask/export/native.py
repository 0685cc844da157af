"""Any run as `model.safetensors` + `config.json` (the checkpoint's: recipe, role, settings, model),
and `unmask.load` that reads such a folder back as the recipe's objective with those weights. The
weights are those a run evaluates (the EMA ones when kept); the run's tokenizer.json and vocab.json
come along when it has them, so samples can be decoded. Nothing is pickled.

    >>> objective = unmask.load("out/digits")        # doctest: +SKIP
    >>> objective.model(tokens)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import UnmaskError

KEPT = ("tokenizer.json", "vocab.json")  # run files that decode what the model reads and writes


def write(loaded, folder: Path) -> None:
    """The weights of `loaded.objective`, its run's config and the decoding files into `folder`."""
    recipe, objective, run = loaded
    weights = {k: v.detach().contiguous().cpu() for k, v in objective.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))
    config = {**recipe.run_config(), "step": run.trained_step()}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name in KEPT:
        if run.has(name):
            shutil.copyfile(run.folder / name, folder / name)


def load(folder: str | Path) -> nn.Module:
    """The objective (in eval mode) of a folder written by `unmask export --to unmask`, or of a run folder."""
    from .. import recipes

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() and (folder / "checkpoints").is_dir():
        return recipes.load_run(folder, progress=False).objective
    for name in ("model.safetensors", "config.json"):
        if not (folder / name).is_file():
            raise UnmaskError(f"{folder} holds no {name}; give a folder from `unmask export --to unmask` "
                              "or a run folder")
    try:
        config = json.loads((folder / "config.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError, SafetensorError) as e:
        raise UnmaskError(f"{folder} cannot be loaded: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UnmaskError(f"{folder}/config.json is not a JSON object")
    cls = recipes.get(str(config.get("recipe", "?")))
    recipe = cls(cls.settings_from(config, folder))
    return recipe.restore(folder, {"model": tensors}, config, config.get("role", "main"))
