"""Recipe `image-tokenizer` and `unmask tokenize`: a tiny run writes its metric rows with the exact
storage figures (64 tokens of 240 FSQ codes: 64 log2 240 bits; 32 x 32 grey pixels: 8192 bits) and a
PSNR that is 10 log10(1 / mse); stored tokens decode to the tokenizer's own reconstruction of the
same images, carry the set's labels and the checkpoint's SHA-256 (recomputed from the file here);
a run with no tokenizer, an unknown set or split, and a set of other channels are one-line errors."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import run_cli, tiny
from unmask.data import image_sets
from unmask.recipes.image_tokenizer import trained_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

BITS_FSQ = 64 * math.log2(8 * 6 * 5)  # the default levels 8,6,5 on an 8 x 8 grid


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("image-tokenizer") / "run"
    ran = run_cli("train", "image-tokenizer", "--out", folder, "--no-progress",
                  *tiny("image-tokenizer", "tokenizer.steps=3"))
    assert ran.code == 0, ran.err
    return folder


def test_the_recipe_reports_reconstruction_codebook_use_and_exact_storage(tokenizer_run):
    metrics = json.loads((tokenizer_run / "metrics.json").read_text())
    assert metrics["bits_per_image"] == pytest.approx(BITS_FSQ, abs=1e-9)
    assert metrics["pixel_bits_per_image"] == 32 * 32 * 8
    assert metrics["compression"] == pytest.approx(8192 / BITS_FSQ, rel=1e-12)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / metrics["mse"]), rel=1e-9)
    assert metrics["codebook_size"] == 240 and metrics["tokens_per_image"] == 64
    assert metrics["used_share"] == pytest.approx(metrics["codes_used"] / 240)
    assert 1 <= metrics["perplexity"] <= metrics["codes_used"]
    assert (metrics["training_images"], metrics["held_out_images"]) == (1125, 207)
    report = (tokenizer_run / "report.md").read_text()
    for row in ("reconstruction MSE, held-out", "PSNR of the held-out set", "share of the codebook used",
                "perplexity of the held-out codes", "bits per image as tokens", "reconstructions.png"):
        assert row in report, row
    assert (tokenizer_run / "reconstructions.png").stat().st_size > 0


def test_train_steps_are_refused_for_the_tokenizer_sections_own(cli):
    ran = cli("train", "image-tokenizer", "train.steps=3", "--out", "/nonexistent/never")
    assert ran.code == 2 and "tokenizer.steps" in ran.err and "train.steps" in ran.err


def test_stored_tokens_decode_to_the_tokenizers_own_reconstruction(tokenizer_run, tmp_path, cli):
    out = tmp_path / "glyphs-test.safetensors"
    ran = cli("tokenize", tokenizer_run, "--set", "glyphs", "--split", "test", "--out", out)
    assert ran.code == 0, ran.err
    stored = load_file(str(out))
    test = image_sets.load("glyphs", "test")
    assert stored["tokens"].shape == (207, 8, 8) and stored["tokens"].dtype == torch.long
    assert torch.equal(stored["labels"], test.labels)
    made = trained_tokenizer(tokenizer_run)
    with torch.inference_mode():
        own = made.tokenizer.eval()(test.images).reconstruction  # forward: encode, quantize, decode at once
        assert torch.equal(made.tokenizer.decode(stored["tokens"]), own)
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["unmask"])
    ckpt = next((tokenizer_run / "checkpoints").iterdir())
    digest = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert meta["tokenizer_sha256"] == digest and meta["tokenizer_recipe"] == "image-tokenizer"
    assert (meta["set"], meta["split"], meta["images"], meta["codebook_size"], meta["grid"]) == \
        ("glyphs", "test", 207, 240, [8, 8])
    assert meta["bits_per_image"] == pytest.approx(BITS_FSQ, abs=1e-9) and meta["pixel_bits_per_image"] == 8192


def test_tokenize_errors_name_what_is_wrong(tokenizer_run, digits_run, tmp_path, cli):
    out = tmp_path / "x.safetensors"
    ran = cli("tokenize", digits_run, "--set", "glyphs", "--out", out)
    assert ran.code == 2 and "not an image tokenizer run" in ran.err and "'digits'" in ran.err
    ran = cli("tokenize", tmp_path, "--set", "glyphs", "--out", out)
    assert ran.code == 2 and "not an image tokenizer run" in ran.err and "no checkpoint" in ran.err
    ran = cli("tokenize", tokenizer_run, "--set", "nosuch", "--out", out)
    assert ran.code == 2 and "unknown image set 'nosuch'" in ran.err and "glyphs" in ran.err
    ran = cli("tokenize", tokenizer_run, "--set", "glyphs", "--split", "valid", "--out", out)
    assert ran.code == 2 and "unknown split 'valid'" in ran.err
    ran = cli("tokenize", tokenizer_run, "--set", "emoji", "--out", out)
    assert ran.code == 2 and "3 channels" in ran.err
    assert not out.exists()
