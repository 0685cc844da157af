"""Recipe `glyphs-generators` at tiny size: each generator's token layout (label, pivots, scales,
dense grid) holds the right tokens, computed another way; each sampler spends exactly the configured
denoiser calls (counted by a wrapper); settings that cannot meet at equal NFE are refused; and a
whole run writes a report with the four generators' rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.data import image_sets
from unmask.errors import UnmaskError
from unmask.recipes import get
from unmask.recipes.glyph_generators import GENERATORS, encode_at
from unmask.recipes.image_tokens import load_tokenizer, stored_tokens
from unmask.recipes.run import Run
from unmask.sampling import generate

TINY = ["train.steps=2", "tokenizer.steps=2", "eval.judge_steps=2", "model.dim=16", "model.depth=1",
        "model.heads=2", "eval.samples_per_class=1", "eval.timing_steps=1"]
SIZES = {"maskgit": 1 + 64, "himar": 1 + 16 + 64, "hmar": 1 + 1 + 4 + 16 + 64, "shuffle": 1 + 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    recipe = get("glyphs-generators")().with_overrides(TINY)
    run = Run(tmp_path_factory.mktemp("glyph-gen"), progress=False)
    metrics = recipe.train(run)
    return recipe, run, metrics


def test_layouts_hold_label_pivots_scales_and_dense_tokens(trained):
    recipe, run, _ = trained
    tokenizer = load_tokenizer(recipe, run)
    train = image_sets.load("glyphs", "train")
    x = train.images[:200].float() / 255  # the references on the first 200 (the encoder is per image)
    dense = stored_tokens(run, tokenizer, "glyphs-train", train.images)
    assert torch.equal(dense[:200], tokenizer.encode(train.images[:200]).flatten(1))
    assert torch.equal(encode_at(tokenizer, x), tokenizer.encode(train.images[:200]))
    codes = recipe.codes()
    for g in GENERATORS:
        assert recipe.layout(g).n == SIZES[g]
        tokens = recipe.tokens(run, tokenizer, g, "train")
        assert tokens.shape == (len(train.labels), SIZES[g])
        assert torch.equal(tokens[:, 0], train.labels + codes)  # the class is the first token
        assert torch.equal(tokens[:, -64:], dense)
        assert int(tokens[:, 1:].max()) < codes
    pivots = recipe.tokens(run, tokenizer, "himar", "train")[:200, 1:17]
    assert torch.equal(pivots, encode_at(tokenizer, F.avg_pool2d(x, 2)).flatten(1))  # 2x area-downsampled
    scales = recipe.tokens(run, tokenizer, "hmar", "train")[:200, 1:22]
    assert torch.equal(scales[:, :1], encode_at(tokenizer, F.avg_pool2d(x, 8)).flatten(1))  # 4x4 pixels -> 1 token
    assert torch.equal(scales[:, 1:5], encode_at(tokenizer, F.avg_pool2d(x, 4)).flatten(1))
    assert torch.equal(scales[:, 5:21], encode_at(tokenizer, F.avg_pool2d(x, 2)).flatten(1))


def test_models_carry_their_papers_options(trained):
    recipe, _, _ = trained
    models = {g: recipe.generator_objective(g).model for g in GENERATORS}
    assert models["shuffle"].shuffle is not None and models["maskgit"].shuffle is None
    assert models["hmar"].attn_mask is not None and models["maskgit"].attn_mask is None
    codes, classes = recipe.codes(), recipe.classes()
    assert models["maskgit"].config.segment_vocab["label"] == (codes, codes + classes)
    g = torch.Generator().manual_seed(0)
    for name in GENERATORS:  # the label is never hidden in training
        objective = recipe.generator_objective(name)
        mask = objective.masker(objective.layout, 200, ratio=objective.draw_ratio(200, g), generator=g)
        assert not mask[:, 0].any()
        if name in ("himar", "hmar"):  # a coarse-to-fine row hides at least one token of its stage
            assert mask.sum(1).min() >= 1
    himar = recipe.generator_objective("himar")
    mask = himar.masker(himar.layout, 300, ratio=0.5, generator=g)
    in_pivots, in_dense = mask[:, 1:17].any(1), mask[:, 17:].any(1)
    assert not (in_pivots & in_dense).any() and (in_pivots | in_dense).all()  # one stage per row


class Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, tokens):
        self.calls += 1
        return self.model(tokens)


@pytest.mark.parametrize("sampling,nfe", [([], 8), (["sampler.nfe=4", "sampler.pivot_steps=1",
                                                     "sampler.scale_steps=1,1,1,1"], 4)])
def test_each_generator_spends_the_configured_calls(sampling, nfe):
    recipe = get("glyphs-generators")().with_overrides([*TINY, *sampling])
    labels = torch.tensor([0, 5, 110])
    for g in GENERATORS:
        model = recipe.generator_objective(g).model.eval()
        counting = Counting(model)
        canvas = torch.full((3, model.config.layout.n), model.mask_id)
        canvas[:, 0] = labels + recipe.codes()
        out = generate(counting, canvas, recipe.sampler(g), mask_id=model.mask_id,
                       generator=torch.Generator().manual_seed(0))
        assert out.nfe == counting.calls == nfe, g
        assert torch.equal(out.tokens[:, 0], canvas[:, 0]) and int(out.tokens[:, 1:].max()) < recipe.codes()


def test_unequal_budgets_are_refused():
    with pytest.raises(UnmaskError, match="adds up to 7"):
        get("glyphs-generators")().with_overrides(["sampler.scale_steps=1,1,1,4"])
    with pytest.raises(UnmaskError, match="pivot_steps"):
        get("glyphs-generators")().with_overrides(["sampler.nfe=4", "sampler.pivot_steps=4",
                                                   "sampler.scale_steps=1,1,1,1"])


def test_report_lists_the_four_generators(trained):
    recipe, run, metrics = trained
    for g in GENERATORS:
        assert metrics[f"nfe_{g}"] == 8
        assert 0 <= metrics[f"precision_{g}"] <= 1 and 0 <= metrics[f"class_acc_{g}"] <= 1
        assert metrics[f"fd_{g}"] >= 0 and metrics[f"call_ms_{g}"] > 0 and metrics[f"step_ms_{g}"] > 0
    assert metrics["samples_per_generator"] == 111 and metrics["held_out_glyphs"] == 207
    report = (run.folder / "report.md").read_text()
    fd_table = report.split("## Fréchet distance")[1].split("## ")[0]
    for title in ("| MaskGIT |", "| Hi-MAR (pivots) |", "| HMAR (next scale) |", "| Token-Shuffle (s=2) |"):
        assert title in fd_table
    assert (run.folder / "samples.png").exists()
    for g in ("himar", "hmar", "shuffle"):  # each generator has its own trained run
        assert run.sub(g).trained_step() == 2
    assert run.trained_step() == 2 and run.sub("tokenizer").trained_step() == 2
