"""The command line against careless and hostile inputs: 320 generated invalid invocations (huge
sizes, empty and wrong output paths, resumes under other settings, keys given twice, damaged and
crafted checkpoint folders). Each must end with exit code 2 and one error line on stderr, never a
traceback, never hang past 60 seconds, write nothing outside a run folder and change nothing in an
existing one (but the lock file's holder line)."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli, tiny
from reliability_helpers import copy_run, edit_config, resign, tree
from unmask.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")
CASES = 320
HUGE_KEYS = ("train.batch_size", "model.dim", "model.depth", "eval.n_samples")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_run):
    """A whole run and damaged or crafted copies of it."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    made = {"good": copy_run(digits_run, root / "good")}

    def variant(name, damage):
        run = copy_run(digits_run, root / name)
        damage(list_checkpoints(run)[-1])
        made[name] = run

    def unlisted(ckpt):
        save_file({"w": torch.zeros(2)}, str(ckpt / "ema.safetensors"))

    def no_state_checksum(ckpt):
        state = json.loads((ckpt / "state.json").read_text())
        del state["state_sha256"]
        (ckpt / "state.json").write_text(json.dumps(state))

    def flipped(ckpt):
        raw = bytearray((ckpt / "model.safetensors").read_bytes())
        raw[len(raw) // 2] ^= 0x10
        (ckpt / "model.safetensors").write_bytes(bytes(raw))

    def torn_state(ckpt):
        (ckpt / "state.json").write_text((ckpt / "state.json").read_text()[:50])

    def moments(ckpt):
        opt = load_file(str(ckpt / "optimizer.safetensors"))
        key = next(k for k, v in opt.items() if v.ndim == 2)
        opt[key] = torch.zeros(3, 3)
        save_file(opt, str(ckpt / "optimizer.safetensors"))
        resign(ckpt)

    for name, damage in [("unlisted", unlisted), ("no_state_checksum", no_state_checksum), ("flipped", flipped),
                         ("torn_state", torn_state), ("moments", moments)]:
        variant(name, damage)
    crafted = {"dim_text": lambda c: c["settings"]["model"].update(dim="16"),
               "dim_huge": lambda c: c["settings"]["model"].update(dim=10**6),
               "lr_nan": lambda c: c["settings"]["train"].update(lr=float("nan")),
               "unknown_key": lambda c: c["settings"]["train"].update(bogus=1),
               "recipe": lambda c: c.update(recipe="poems"),
               "settings_list": lambda c: c.update(settings=[1, 2])}
    for name, change in crafted.items():
        made[name] = copy_run(digits_run, root / name)
        edit_config(made[name], change)
    return root, made


NEEDLES = {"unlisted": "not in state.json", "no_state_checksum": "no checksum of its own", "flipped": "checksum",
           "torn_state": "state.json", "dim_text": "is not of type int", "dim_huge": "needs about",
           "lr_nan": "train.lr", "unknown_key": "unknown key", "recipe": "poems", "settings_list": "mapping"}


def invocation(rng: random.Random, made: dict, fresh):
    """(argv, a text the error line must contain)."""
    kind = rng.choice(["huge", "huge", "sample_n", "out_empty", "out_suffix", "out_file", "damaged", "damaged",
                       "moments", "resume", "fewer_steps", "twice", "eval_train", "change_other"])
    good = made["good"]
    if kind == "huge":
        key = rng.choice(HUGE_KEYS)
        value = rng.randint(10**6, 10**12) if key != "model.depth" else rng.randint(10**6, 10**9)
        if key == "model.dim":
            value -= value % 2  # divisible by the heads: the size, not the shape, must refuse it
        return ["train", "digits", "--out", fresh(), *tiny("digits", f"{key}={value}")], "needs about"
    if kind == "sample_n":
        return ["sample", good, "--n", str(rng.randint(10**8, 10**13)), "--out", fresh() / "s.png"], "needs about"
    if kind == "out_empty":
        return [rng.choice(["train", "train"]), "digits", "--out", rng.choice(["", " ", "\t"])], "is empty"
    if kind == "out_suffix":
        suffix = rng.choice([".jpg", ".txt", ".mid", ".npy", ".pngx", ".tsv", ".PNG.bak"])
        return ["sample", good, "--n", "2", "--out", fresh() / f"s{suffix}"], "writes .png files"
    if kind == "out_file":
        return ["train", "digits", "--out", good / "report.md", *tiny("digits")], "is a file"
    if kind == "damaged":
        name = rng.choice(sorted(NEEDLES))
        command = rng.choice(["eval", "sample"])
        extra = ["--n", "2", "--out", fresh() / "s.png"] if command == "sample" else []
        return [command, made[name], *extra], NEEDLES[name]
    if kind == "moments":
        return ["train", "digits", "--out", made["moments"], *tiny("digits", "train.steps=3"), "--change",
                "train.steps"], "optimizer state"
    if kind == "resume":
        key, value = rng.choice([("train.lr", rng.uniform(1e-4, 0.1)), ("train.seed", rng.randint(1, 10**6)),
                                 ("objective.block_share", rng.uniform(0, 1)), ("train.weight_decay", 0.3),
                                 ("train.warmup", rng.randint(2, 50)), ("objective.label_weight", 0.9)])
        return ["train", "digits", "--out", good, *tiny("digits", f"{key}={value}")], "cannot resume"
    if kind == "fewer_steps":
        return ["train", "digits", "--out", good, *tiny("digits", "train.steps=1")], "past train.steps=1"
    if kind == "twice":
        key = rng.choice(["train.lr=0.1", "model.dim=16", "sampler.steps=3", "eval.n_samples=20"])
        return ["train", "digits", *tiny("digits"), key, key.replace("=", "=1")], "given twice"
    if kind == "eval_train":
        key = rng.choice(["train.steps=999999", "model.dim=32", "data.source=x", "objective.label_weight=0.2"])
        return [rng.choice(["eval", "sample"]), good, key], "cannot change here"
    return ["train", "digits", "--out", good, *tiny("digits"), "--change", rng.choice(["train.lr", "model.dim"])], \
        "cannot change on resume"


class Hang(Exception):
    pass


def test_invalid_invocations_end_in_one_line_exit_2_and_change_nothing(runs, tmp_path, monkeypatch):
    root, made = runs
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    counter = iter(range(10**6))

    def fresh():
        return tmp_path / "new" / f"r{next(counter)}"

    def alarm(signum, frame):
        raise Hang

    old = signal.signal(signal.SIGALRM, alarm)
    rng = random.Random(20261204)
    before = tree(root)
    kinds, slowest = set(), 0.0
    try:
        for _ in range(CASES):
            argv, needle = invocation(rng, made, fresh)
            started = time.perf_counter()
            signal.alarm(60)
            try:
                ran = run_cli(*argv)
            except Hang:
                pytest.fail(f"hung past 60 s: {argv}")
            finally:
                signal.alarm(0)
            slowest = max(slowest, time.perf_counter() - started)
            assert ran.code == 2, (argv, ran)
            assert "Traceback" not in ran.err, argv
            lines = ran.err.strip().splitlines()
            assert lines and lines[-1].startswith("unmask: error: "), (argv, ran.err)
            assert all(line.startswith("unmask: warning: ") for line in lines[:-1]), (argv, ran.err)
            assert needle in lines[-1], (argv, needle, lines[-1])
            assert list(cwd.iterdir()) == [], argv  # nothing written where the command ran
            assert not (tmp_path / "new").exists() or not any((tmp_path / "new").rglob("*")), argv
            kinds.add(needle)
        assert tree(root) == before  # no existing run folder changed
    finally:
        signal.signal(signal.SIGALRM, old)
    assert len(kinds) >= 15
    print(f"slowest invocation {slowest:.2f} s")
