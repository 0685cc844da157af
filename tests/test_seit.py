"""SeiT++ (`recipes/seit.py`, `masking/truncated_normal.py`): the mask ratio lies in [0.5, 1], its
quantiles are scipy's truncated normal's and its sample mean the analytic mean (0.69360, checked by
hand); MTM hides exactly round(ratio * 64) tokens of each row; the storage figures are the formulas
(64 log2 240 bits of tokens, 32 * 32 * 8 of pixels); a tiny run trains every role, reports every row,
starts SeiT++'s classifier from the MTM weights, and its RUN/tokenizer can be stored by `tokenize`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, merged, run_cli
from unmask.layout import Layout
from unmask.masking import RandomMask
from unmask.masking.truncated_normal import TruncatedNormalRatio
from unmask.recipes import Run, get
from unmask.recipes.seit import PatchTransformer

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = merged(TINY["seit"], "train.steps=3", "tokenizer.steps=3", "classify.lr=1e-9")


def test_the_ratio_stays_in_its_bounds_and_matches_the_analytic_mean():
    ratio = TruncatedNormalRatio()
    draws = ratio.draw(200_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float64
    assert draws.min() >= 0.5 and draws.max() <= 1.0
    assert draws.min() < 0.5005 and draws.max() > 0.995  # it reaches both ends
    # by hand: alpha = -0.2, beta = 1.8; phi(-0.2) = 0.3910427, phi(1.8) = 0.0789502,
    # Phi(1.8) - Phi(-0.2) = 0.9640697 - 0.4207403 = 0.5433294; 0.55 + 0.25 * 0.3120925 / 0.5433294
    assert ratio.expected() == pytest.approx(0.6936015, abs=1e-6)
    sd = draws.std().item()
    assert abs(draws.mean().item() - ratio.expected()) < 4 * sd / math.sqrt(len(draws))  # 4 standard errors
    assert TruncatedNormalRatio(0.0, 1.0, 0.5, 0.3).expected() == pytest.approx(0.5, abs=1e-15)  # symmetric


def test_the_inverse_cdf_is_scipys_truncated_normal():
    stats = pytest.importorskip("scipy.stats")
    for low, high, mean, std in ((0.5, 1.0, 0.55, 0.25), (0.1, 0.9, 0.7, 0.1)):
        ratio = TruncatedNormalRatio(low, high, mean, std)
        ref = stats.truncnorm((low - mean) / std, (high - mean) / std, loc=mean, scale=std)
        u = torch.tensor([0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0], dtype=torch.float64)
        assert torch.allclose(ratio(u), torch.from_numpy(ref.ppf(u.numpy())), atol=1e-10)
        assert ratio.expected() == pytest.approx(ref.mean(), abs=1e-12)
    with pytest.raises(ValueError, match="low < high"):
        TruncatedNormalRatio(0.6, 0.5)


def test_mtm_hides_exactly_the_rounded_share_of_each_row():
    recipe = get("seit")().with_overrides(TINY["seit"])
    objective = recipe.build()
    assert isinstance(objective.schedule, TruncatedNormalRatio)
    ratios = objective.draw_ratio(4000, torch.Generator().manual_seed(1))
    mask = objective.masker(Layout.grid(8, 8), 4000, ratio=ratios, generator=torch.Generator().manual_seed(2))
    counts = mask.sum(1)
    assert torch.equal(counts, torch.round(ratios * 64).long())
    assert counts.min() == 32 and counts.max() == 64
    assert isinstance(objective.masker, RandomMask)


def test_the_pixel_baseline_reads_as_many_patches_as_there_are_tokens():
    net = PatchTransformer(1, 32, 4, 16, 1, 2)
    out = net.features(torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8))
    assert out.shape == (3, 64, 16)


@pytest.fixture(scope="module")
def seit_run(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("seit") / "run"
    ran = run_cli("train", "seit", "--out", folder, "--no-progress", *SETTINGS)
    assert ran.code == 0, ran.err
    return folder


def test_a_tiny_run_reports_every_row_with_the_exact_storage(seit_run):
    metrics = json.loads((seit_run / "metrics.json").read_text())
    assert metrics["bits_tokens"] == pytest.approx(64 * math.log2(240), abs=1e-9)
    assert metrics["bits_pixels"] == 32 * 32 * 8
    assert metrics["compression"] == pytest.approx(8192 / (64 * math.log2(240)), rel=1e-12)
    for key in ("acc_pixels", "acc_tokens", "acc_finetune", "probe_mtm", "probe_random_init"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert (metrics["classes"], metrics["training_images"], metrics["held_out_images"]) == (111, 1125, 207)
    report = (seit_run / "report.md").read_text()
    for row in ("pixels (4x4 patches), from scratch", "tokens, no MTM pre-training",
                "MTM pre-training + fine-tune (SeiT++)", "bits per image, tokens", "bits per image, pixels"):
        assert row in report, row
    for role in ("tokenizer", "tokens", "finetune", "pixels"):
        assert (seit_run / role / "checkpoints").is_dir(), role


def test_seit_fine_tunes_from_the_mtm_weights_and_the_scratch_classifier_does_not(seit_run):
    """The run's classifiers train at lr 1e-9, so each ends where it started: SeiT++'s at the MTM
    weights, the scratch one at the seed's initialisation, which MTM training moved away from."""
    recipe = get("seit")().with_overrides(SETTINGS)
    run = Run(seit_run, progress=False)
    mtm = recipe.load(run).model.state_dict()
    tuned = recipe.load(run.sub("finetune"), "finetune").backbone.state_dict()
    scratch = recipe.load(run.sub("tokens"), "tokens").backbone.state_dict()
    start = recipe.objective("tokens").backbone.state_dict()
    assert tuned.keys() == mtm.keys()
    for key in mtm:
        assert torch.allclose(tuned[key], mtm[key], atol=1e-6), key
        assert torch.allclose(scratch[key], start[key], atol=1e-6), key
    assert not torch.allclose(mtm["embed.tokens.weight"], start["embed.tokens.weight"], atol=1e-4)


def test_tokenize_reads_the_tokenizer_role_of_a_seit_run(seit_run, tmp_path, cli):
    out = tmp_path / "t.safetensors"
    ran = cli("tokenize", seit_run, "--set", "glyphs", "--split", "train", "--out", out)
    assert ran.code == 0, ran.err
    stored = load_file(str(out))
    recipe = get("seit")().with_overrides(SETTINGS)
    assert torch.equal(stored["tokens"].reshape(1125, 64), recipe.tokens(Run(seit_run, progress=False), "train"))
