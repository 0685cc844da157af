"""Recipes: the one name -> recipe table. A recipe binds data, model, objective, sampler and
evaluation, and names the papers it shows."""

from __future__ import annotations

from pathlib import Path

from ..errors import UnmaskError
from . import (
    ar_code,
    chorales,
    digits,
    electra_code,
    genmol,
    mae_digits,
    mdlm_code,
    mlm_code,
    pointmae_shapes,
    videomae_digits,
)

RECIPES = {m.NAME: m for m in (digits, mae_digits, mlm_code, electra_code, mdlm_code, ar_code, videomae_digits,
                                pointmae_shapes, chorales, genmol)}


def get(name: str):
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnmaskError(f"unknown recipe {name!r}{hint} (recipes: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def load_run(run_dir: Path):
    """(recipe module, config, objective with the run's evaluation weights) of a trained run."""
    from ..train.checkpoint import find_checkpoint, load_checkpoint

    ckpt = find_checkpoint(run_dir)
    tensors, config, _ = load_checkpoint(ckpt)
    recipe = get(config.get("recipe", "?"))
    try:
        cfg = recipe.Config(**config["config"])
    except (TypeError, KeyError) as e:
        raise UnmaskError(f"{ckpt}/config.json does not fit recipe {recipe.NAME!r}: {e}") from None
    objective = recipe.build(cfg)
    if config.get("model") != cfg.model_config().to_dict():
        raise UnmaskError(f"{ckpt} holds a model that recipe {recipe.NAME!r} does not build")
    weights = tensors.get("ema", tensors["model"])
    try:
        objective.load_state_dict(weights)
    except RuntimeError as e:
        raise UnmaskError(f"weights in {ckpt} do not fit the model: {str(e).splitlines()[0]}") from None
    return recipe, cfg, objective


__all__ = ["RECIPES", "get", "load_run"]
