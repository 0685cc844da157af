"""Shared test fixtures: tiny settings for every recipe, the command line run in process, and a
tiny trained digits run."""

from __future__ import annotations

import contextlib
import io
import os
from typing import NamedTuple

import pytest
import torch

# Under `pytest -n N` (make test) each of the N processes gets its share of the cores: torch's
# default of one thread per core in every process would oversubscribe them N times.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

# Settings that make each recipe train, evaluate and sample in a few seconds (not to measure anything).
_SMALL = ["train.steps=2", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2"]
_AUTOENCODER = [*_SMALL, "model.decoder_dim=8", "model.decoder_depth=1", "eval.probe_draws=1"]
_CODE = [*_SMALL, "train.batch_size=4", "eval.chunks=16"]
TINY = {
    "digits": [*_SMALL, "train.batch_size=16", "eval.n_samples=10", "sampler.steps=2"],
    "mae-digits": [*_AUTOENCODER, "train.batch_size=16"],
    "videomae-digits": [*_AUTOENCODER, "train.batch_size=8", "data.clips_per_digit=1", "eval.baselines=false"],
    "pointmae-shapes": [*_AUTOENCODER, "train.batch_size=8", "model.pointnet_width=4", "data.train_per_class=10",
                        "data.test_per_class=2", "data.points=96", "data.groups=8", "data.group_size=8",
                        "objective.codes=8"],
    "mlm-code": [*_CODE, "sampler.steps=2"],
    "electra-code": [*_CODE, "sampler.steps=2"],
    "mdlm-code": [*_CODE, "eval.infill_cases=2", "eval.variance_repeats=2", "eval.bound_draws=1",
                  "sampler.maskgit_steps=2", "sampler.ancestral_steps=2"],
    "ar-code": [*_CODE, "eval.infill_cases=2"],
    # ilm-code's own vocabulary is 2048; at 8192 it shares the corpus the other code recipes load
    "ilm-code": [*_CODE, "eval.infill_cases=2", "eval.room=16", "data.vocab_size=8192"],
    "chorales": [*_SMALL, "train.batch_size=4", "sampler.steps=4", "eval.harmonies=1", "eval.unconditional=2",
                 "eval.midi_examples=1"],
    "genmol": [*_SMALL, "train.batch_size=8", "data.subsample=24", "eval.n_samples=8", "eval.fragment_cases=4",
               "eval.lead_starts=1", "eval.lead_rounds=1", "eval.lead_proposals=2"],
    "reasoning": [*_SMALL, "train.batch_size=8", "ar.steps=2", "data.train_size=64", "data.test_size=8",
                  "sampler.block_length=4", "sampler.steps_per_block=2"],
    "glyphs": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.width=8", "tokenizer.batch_size=8",
               "eval.draws=1", "eval.references=8", "eval.grid_prompts=2", "eval.grid_columns=2", "eval.judge_steps=2",
               "sampler.steps=2"],
    "emoji": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.width=8", "tokenizer.batch_size=8",
              "eval.draws=1", "eval.references=8", "eval.grid_prompts=2", "eval.grid_columns=2", "eval.judge_steps=2",
              "sampler.steps=2"],
    "glyphs-generators": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.width=8",
                          "tokenizer.batch_size=8", "eval.judge_steps=2", "eval.samples_per_class=1",
                          "eval.timing_steps=1"],
    "image-tokenizer": ["tokenizer.steps=2", "tokenizer.batch_size=8", "tokenizer.width=8", "eval.shown=4"],
    "seit": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.batch_size=8", "tokenizer.width=8",
             "classify.steps=2", "classify.batch_size=8"],
    "ett": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.batch_size=8", "tokenizer.width=8",
            "tokenizer.codes=8"],
    "ait": [*_SMALL, "train.batch_size=8", "tokenizer.steps=2", "tokenizer.batch_size=8", "tokenizer.width=8",
            "tokenizer.codes=8"],
    "w2v-bert": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=2",
                 "model.heads=2", "model.contrast_depth=1", "model.codes=8", "eval.draws=1"],
    "ask2mask": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=2",
                 "model.heads=2", "model.contrast_depth=1", "model.codes=8", "eval.draws=1",
                 "ask2mask.scorer_steps=2", "ask2mask.scorer_width=4"],
    "audio-magnet": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1",
                     "model.heads=2", "acoustic.steps=2", "acoustic.batch_size=8", "acoustic.width=8",
                     "acoustic.codes=8", "eval.samples_per_word=1", "eval.judge_steps=2"],
    "speech": ["train.steps=3", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1",
               "model.heads=2", "semantic.steps=3", "semantic.dim=16", "semantic.depth=2", "semantic.layer=1",
               "semantic.codes=8", "semantic.kmeans_steps=2", "acoustic.steps=3", "acoustic.batch_size=8",
               "acoustic.width=8", "acoustic.codes=8", "sampler.t2s_steps=2", "sampler.s2a_steps=1,1,1",
               "eval.judge_steps=10"],
    "motion": ["train.steps=4", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1",
               "model.heads=2", "motion_tokenizer.steps=3", "motion_tokenizer.width=8", "eval.draws=1",
               "eval.sample_windows=2", "sampler.steps=2"],
    "openbeats": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "distill.steps=2", "model.dim=16",
                  "model.depth=1", "model.heads=2", "model.codes=8", "model.tokenizer_dim=16",
                  "model.tokenizer_depth=1", "eval.draws=1"],
    "bamm": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1",
             "model.heads=2", "data.max_frames=6", "data.codes=8", "eval.draws=1", "eval.stride=8"],
    "motion-masks": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=1",
                     "model.heads=2", "mmdm.steps=4", "eval.steps=2", "eval.draws=1"],
    "spark-glyphs": ["train.steps=2", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.decoder_dim=8",
                     "eval.probe_draws=1"],
    "channel-mae": [*_AUTOENCODER, "train.batch_size=8", "data.clips_per_digit=1", "eval.baselines=false"],
    "uda-digits": [*_SMALL, "train.batch_size=16", "data.target_test=20"],
}


def merged(base: list[str], *changes: str) -> list[str]:
    """`base` (dotted key=value settings) with `changes` put in place of the same keys: a key may be
    given only once."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [s for s in base if s.split("=", 1)[0] not in keys] + list(changes)


def tiny(name: str, *changes: str) -> list[str]:
    """TINY[name] with `changes` in place of the same keys."""
    return merged(TINY[name], *changes)


class Ran(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(*argv) -> Ran:
    """`unmask ARGV` in this process: exit code, stdout and stderr."""
    from unmask.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Ran(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def chorales_cache(tmp_path_factory):
    """A parsed-corpus cache of four real chorales (two in the held-out share) standing in for all 328,
    whose parsing takes most of a minute: pass it as `data.cache`."""
    pytest.importorskip("music21")
    from unmask.data import music

    names = ("bach/bwv269", "bach/bwv347", "bach/bwv153.1", "bach/bwv385")
    folder = tmp_path_factory.mktemp("chorales-cache")
    music._write_cache(music._cache_path(folder, None, 2), [music.load_chorale(n) for n in names])
    return folder


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A digits run trained for three steps at the tiny settings (read-only for tests)."""
    folder = tmp_path_factory.mktemp("digits") / "run"
    ran = run_cli("train", "digits", "--out", folder, "--no-progress", *TINY["digits"])
    assert ran.code == 0, ran.err
    return folder


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op threads set to `n` inside the block (tiny models run faster on one thread
    than on two contended ones), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: on toy tensors and tiny models, waking a thread pool costs
    more than the work, most of all on a busy machine. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`, or as an argument."""
    with threads(1):
        yield
