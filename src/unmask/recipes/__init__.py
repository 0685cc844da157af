"""Recipes: the one name -> recipe table. A recipe (`base.Recipe`) binds data, model, objective,
sampler and evaluation under typed nested settings, and names the papers it shows."""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import UnmaskError
from .ait import AiT
from .ar_code import ArCode
from .ask2mask import Ask2MaskRecipe
from .audio_magnet import AudioMagnet
from .bamm import BAMMRecipe
from .base import Loaded, Recipe, SamplerSettings, TransformerSettings
from .channels_mae import ChannelMAE
from .chorales import Chorales
from .digits import Digits
from .electra_code import ElectraCode
from .emoji import Emoji
from .ett import ETT
from .genmol import GenMol
from .glyph_generators import GlyphGenerators
from .glyphs import Glyphs
from .ilm_code import IlmCode
from .image_tokenizer import ImageTokenizerRecipe
from .mae_digits import MAEDigits
from .mdlm_code import MdlmCode
from .mlm_code import MlmCode
from .motion import Motion
from .motion_masks import MotionMasks
from .openbeats import OpenBEATs
from .pointmae_shapes import PointMAEShapes
from .reasoning import Reasoning
from .report import Metric, Report, Table
from .run import Run
from .seit import SeiT
from .spark_glyphs import SparKGlyphs
from .speech import Speech
from .uda_digits import UDADigits
from .videomae_digits import VideoMAEDigits
from .w2v_bert import W2VBertRecipe

RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (
    Digits, MAEDigits, MlmCode, ElectraCode, MdlmCode, ArCode, VideoMAEDigits, PointMAEShapes, Chorales, GenMol,
    Reasoning, IlmCode, ImageTokenizerRecipe, SeiT, Glyphs, Emoji, GlyphGenerators, ETT, AiT,
    W2VBertRecipe, Ask2MaskRecipe, Motion, AudioMagnet, Speech, BAMMRecipe, MotionMasks, OpenBEATs,
    SparKGlyphs, ChannelMAE, UDADigits)}


def get(name: str) -> type[Recipe]:
    """The recipe class called `name`."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnmaskError(f"unknown recipe {name!r}{hint} (recipes: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def load_run(folder: Path, overrides: list[str] = (), progress: bool = True) -> Loaded:
    """The recipe (with the run's settings, and `overrides` of its sampler and eval sections), its
    objective with the weights to evaluate, and the `Run` of a trained run folder."""
    from ..train.checkpoint import find_checkpoint, load_checkpoint

    run = Run(folder, progress)
    ckpt = find_checkpoint(run.folder)
    tensors, config, _ = load_checkpoint(ckpt)
    cls = get(str(config.get("recipe", "?")))
    recipe = cls(cls.settings_from(config, ckpt))
    if overrides:
        recipe = recipe.with_overrides(list(overrides), sections=("sampler", "eval"))
    return Loaded(recipe, recipe.restore(ckpt, tensors, config), run)


__all__ = ["RECIPES", "Recipe", "Run", "Loaded", "Report", "Table", "Metric", "SamplerSettings",
           "TransformerSettings", "get", "load_run"]
