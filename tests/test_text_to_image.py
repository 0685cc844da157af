"""Text-to-image masked generation (Meissonic, arXiv:2410.08261; recipes `glyphs` and `emoji`): the
prompt is dropped in exactly the configured share of rows and is otherwise never hidden; the mask
ratio the network reads is the hidden share of the image; guidance w = 0 is the plain conditional
sampler and w > 0 equals a hand-written l_c + w (l_c - l_u) with the prompt hidden in l_u; sampling
never changes the prompt; `unmask sample --prompt` writes a grid of the right size, refuses unknown
words and recipes that take no prompt; the report holds the rows with and without guidance."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, run_cli
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.nn.text_condition import PAD, UNK, UnknownWords, WordVocab
from unmask.objectives.text_to_image import PromptDropout, text_to_image
from unmask.recipes import get
from unmask.recipes.text_to_image import sample_tokens
from unmask.sampling import MaskGITSampler, generate

pytestmark = pytest.mark.usefixtures("one_thread")

K, WORDS, L = 12, 6, 3  # image codes, word ids, prompt length of the toy model
LAYOUT = Layout.seq(L, name="prompt") + Layout.grid(4, 4, name="image")


def toy_model(seed: int = 0) -> MaskedTokenModel:
    torch.manual_seed(seed)
    return MaskedTokenModel(ModelConfig(K + WORDS, LAYOUT, dim=16, depth=1, heads=2, ratio_input="image",
                                        segment_vocab={"prompt": (K, K + WORDS), "image": (0, K)})).eval()


def toy_prompts(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(K, K + WORDS, (b, L), generator=g)


def test_word_vocab_by_hand():
    vocab = WordVocab.from_prompts(["LATIN SMALL LETTER A", "grinning face", "A button (blood type)"])
    assert vocab.words == ("a", "blood", "button", "face", "grinning", "latin", "letter", "small", "type")
    assert len(vocab) == 11 and vocab.longest(["LATIN SMALL LETTER A", "grinning face"]) == 4
    got = vocab.encode(["Small letter A", "grinning face"], 5)
    assert got.tolist() == [[9, 8, 2, PAD, PAD], [6, 5, PAD, PAD, PAD]]
    assert vocab.encode(["happy face"], 3, strict=False).tolist() == [[UNK, 5, PAD]]
    with pytest.raises(UnknownWords, match="'happy'"):
        vocab.encode(["happy face"], 3)
    with pytest.raises(UnknownWords, match="at most 2"):
        vocab.encode(["latin small letter a"], 2)


def test_prompt_dropout_drops_exactly_the_share_and_hides_nothing_else_of_the_prompt():
    b = 1000
    drop = PromptDropout(0, L, 0.1)
    tokens = torch.cat([toy_prompts(b), torch.randint(0, K, (b, 16))], dim=1)
    mask = torch.zeros(b, L + 16, dtype=torch.bool)
    mask[:, L:] = torch.rand(b, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    inputs = drop(tokens, mask, K + WORDS, torch.Generator().manual_seed(2))
    dropped = (inputs[:, :L] == K + WORDS).all(1)
    assert int(dropped.sum()) == 100  # round(0.1 * 1000), an exact count
    assert torch.equal(inputs[~dropped, :L], tokens[~dropped, :L])
    assert torch.equal(inputs[:, L:], tokens[:, L:].masked_fill(mask[:, L:], K + WORDS))
    assert int(PromptDropout(0, L, 0.25).dropped(7, torch.Generator().manual_seed(0)).sum()) == 2  # round(1.75)


def test_the_objective_never_hides_the_prompt_and_drops_it_in_the_configured_share():
    model = toy_model()
    objective = text_to_image(model, prompt_dropout=0.2)
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0].clone(), kwargs["where"].clone())),
                                    with_kwargs=True)
    b = 500
    tokens = torch.cat([toy_prompts(b), torch.randint(0, K, (b, 16))], dim=1)
    out = objective({"tokens": tokens}, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    inputs, where = seen[0]
    assert not where[:, :L].any()  # the masker never hides a word, so the loss never reads one
    assert int((inputs[:, :L] == model.mask_id).all(1).sum()) == 100  # round(0.2 * 500) null prompts
    assert torch.equal(inputs[:, L:] == model.mask_id, where[:, L:])


def test_the_ratio_input_is_the_hidden_share_of_the_image_only():
    model = toy_model()
    tokens = torch.cat([toy_prompts(2), torch.randint(0, K, (2, 16))], dim=1)
    tokens[0, L:L + 4] = model.mask_id  # 4 of 16 image tokens hidden: ratio 0.25
    tokens[1, :L] = model.mask_id  # a null prompt, nothing of the image hidden: ratio 0
    with torch.no_grad():
        added = model.inputs(tokens) - model.embed(tokens)
        expect = model.ratio(torch.tensor([0.25, 0.0]))
    assert torch.allclose(added, expect[:, None].expand_as(added), atol=1e-6)
    assert not torch.allclose(expect[0], expect[1])
    assert "ratio_input" not in ModelConfig(K, LAYOUT).to_dict()  # runs written before the option load as they were
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config


def test_guidance_zero_is_the_conditional_sampler_and_the_prompt_never_changes():
    model, prompts = toy_model(), toy_prompts(6)
    sampler = MaskGITSampler(steps=4)
    got, nfe = sample_tokens(model, prompts, 16, sampler, 0.0, torch.Generator().manual_seed(3), batch=4)
    canvas = torch.cat([prompts, torch.full((6, 16), model.mask_id)], dim=1)
    g = torch.Generator().manual_seed(3)
    plain = torch.cat([generate(model, part, sampler, mask_id=model.mask_id, generator=g).tokens
                       for part in canvas.split(4)])
    assert torch.equal(got, plain) and nfe == 4
    assert torch.equal(got[:, :L], prompts) and (got[:, L:] < K).all()


class PromptedStub:
    """A denoiser whose logits favour image token (first word - K) mod K by 1 nat when the prompt is
    given and favour nothing when it is hidden; word ids are ruled out (-inf), as a model's are."""
    mask_id = K + WORDS

    def __call__(self, tokens):
        b, n = tokens.shape
        logits = torch.zeros(b, n, K + WORDS)
        logits[..., K:] = float("-inf")
        given = (tokens[:, 0] != self.mask_id).float()
        favoured = (tokens[:, 0] - K) % K
        logits[torch.arange(b)[:, None], torch.arange(n)[None, :], favoured[:, None]] += given[:, None]
        return logits


def test_guidance_equals_the_hand_written_rule_with_the_prompt_hidden():
    stub, prompts, w = PromptedStub(), toy_prompts(20), 2.0
    sampler = MaskGITSampler(steps=4)
    got, _ = sample_tokens(stub, prompts, 16, sampler, w, torch.Generator().manual_seed(4))

    def by_hand(tokens):
        null = tokens.clone()
        null[:, :L] = stub.mask_id
        cond, uncond = stub(tokens), stub(null)
        diff = cond - uncond  # -inf - -inf at word ids: the conditional logit stays
        return cond + w * torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))

    canvas = torch.cat([prompts, torch.full((20, 16), stub.mask_id)], dim=1)
    want = generate(by_hand, canvas, sampler, mask_id=stub.mask_id, generator=torch.Generator().manual_seed(4)).tokens
    assert torch.equal(got, want) and torch.equal(got[:, :L], prompts)
    plain, _ = sample_tokens(stub, prompts, 16, sampler, 0.0, torch.Generator().manual_seed(4))
    favoured = ((prompts[:, :1] - K) % K)
    # a draw picks it with p = e^3 / (e^3 + 11) = 0.65 guided against e / (e + 11) = 0.20 plain (MaskGIT's
    # confidence order then commits favoured draws first, which raises both shares)
    assert (got[:, L:] == favoured).float().mean() > (plain[:, L:] == favoured).float().mean() + 0.2


@pytest.fixture(scope="module")
def glyphs_run(tmp_path_factory):
    """A glyphs run at the tiny settings (its judge trained for 2 steps: the judge's own tests are elsewhere)."""
    folder = tmp_path_factory.mktemp("glyphs") / "run"
    ran = run_cli("train", "glyphs", "--out", folder, "--no-progress", *TINY["glyphs"])
    assert ran.code == 0, ran.err
    return folder


def test_the_report_holds_the_rows_with_and_without_guidance(glyphs_run):
    metrics = json.loads((glyphs_run / "metrics.json").read_text())
    for key in ("judge_accuracy", "frechet_distance", "precision", "recall"):
        assert {f"{key}_plain", f"{key}_guided"} <= set(metrics)
    assert metrics["samples"] == metrics["reference_images"] == 8 and metrics["nfe_plain"] == 2
    report = (glyphs_run / "report.md").read_text()
    assert "| judge accuracy, guided (w = 3.0) |" in report and "(judge_accuracy_plain)" in report
    assert "| Frechet distance, no guidance (w = 0) |" in report and "samples.png" in report
    prompts = json.loads((glyphs_run / "grid_prompts.json").read_text())
    assert prompts == ["LATIN CAPITAL LETTER A", "GREEK SMALL LETTER OMEGA"]  # first and last class
    from PIL import Image

    assert Image.open(glyphs_run / "samples.png").size == (3 * 2 * 33 + 1, 2 * 33 + 1)  # real | plain | guided


def test_sample_with_a_prompt_writes_a_grid_of_the_right_size(glyphs_run, tmp_path):
    from PIL import Image

    ran = run_cli("sample", glyphs_run, "--prompt", "LATIN SMALL LETTER A", "--n", "16", "--out", tmp_path / "a.png")
    assert ran.code == 0, ran.err
    image = Image.open(tmp_path / "a.png")
    assert image.size == (8 * 33 + 1, 2 * 33 + 1) and image.mode == "L"  # 16 grey tiles of 32 in 8 columns, pad 1


def test_sample_refuses_an_unknown_word_in_one_line(glyphs_run, tmp_path):
    ran = run_cli("sample", glyphs_run, "--prompt", "LATIN SMALL LETTER SHARK", "--n", "2", "--out", tmp_path / "x.png")
    assert ran.code == 2 and ran.err.count("\n") == 1
    assert "'shark'" in ran.err and "known prompts include 'LATIN CAPITAL LETTER A'" in ran.err
    assert not (tmp_path / "x.png").exists()
    ran = run_cli("sample", glyphs_run, "--prompt", "latin small letter a a a", "--n", "2")
    assert ran.code == 2 and "at most 5" in ran.err


def test_a_recipe_without_prompts_refuses_the_option(glyphs_run, tmp_path, monkeypatch):
    assert get("digits").takes_prompt is False and get("glyphs").takes_prompt is True
    monkeypatch.setattr(get("glyphs"), "takes_prompt", False)  # the same run, read as a recipe without prompts
    ran = run_cli("sample", glyphs_run, "--prompt", "latin small letter a", "--n", "2", "--out", tmp_path / "d.png")
    assert ran.code == 2 and "recipe 'glyphs' takes no --prompt" in ran.err
    assert not (tmp_path / "d.png").exists()


def test_emoji_reads_rgb_and_its_prompts(tmp_path):
    recipe = get("emoji")().with_overrides(TINY["emoji"])
    config = recipe.model_config()
    assert recipe.channels == 3 and config.layout.names == ("prompt", "image")
    assert config.layout.segment("prompt").length == 13  # the longest train-split emoji name
    words = recipe.encode(["grinning face"])
    assert (words >= recipe.codes()).all() and words.shape == (1, 13)
    with pytest.raises(UnmaskError, match="'xylophonist'.*known prompts include"):
        recipe.encode(["grinning xylophonist"])
