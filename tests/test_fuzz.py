"""The command line under fuzzing: 320 random invalid invocations, in process through `main(argv)`.
Every one must end with exit code 2 and one error line on stderr (`unmask: error: ...`) that names
the offending key or value, never a traceback, and must never start training.

The invocations are drawn from a fixed seed: unknown recipes and commands, misspelled keys, values of
the wrong type, out of range, not finite or too large for int64, settings that do not fit together,
malformed overrides, unknown flags, and runs that are missing, empty, corrupted, of another recipe or
of another model.
"""

import contextlib
import io
import json
import random
import string

import pytest

from conftest import TINY as TINY_ARGS
from unmask.cli import main
from unmask.config import leaves
from unmask.recipes import get
from unmask.train import Trainer, save_checkpoint

CASES = 320
TINY = dict(item.split("=") for item in TINY_ARGS["digits"])
DIGITS = get("digits")


def fields():
    """(dotted key, field, type) of every setting `train digits` takes, in every section, but free
    text (a path such as data.source, refused when it is read)."""
    return [(k, f, kind) for k, f, kind in leaves(DIGITS().settings)
            if kind is not str or f.metadata.get("choices")]


def bad_value(rng: random.Random, f, kind) -> str:
    """A value that `f` must refuse."""
    m = f.metadata
    if m.get("choices"):
        while True:
            text = "".join(rng.choices(string.ascii_letters + "-_", k=rng.randint(1, 10)))
            if text not in m["choices"]:
                return text
    options = []
    if kind is int:
        options += ["1.5", "abc", "", "1e3", "0x10", "1 2", "--1", "one", "3.", str(2**63 + rng.randint(0, 10**6))]
    if kind is float:
        options += ["abc", "", "1,5", "1.2.3", "e", "--", "nan", "inf", "-inf", "1e999", "0x"]
    if kind is bool:
        options += ["maybe", "2", "", "yes please"]
    lo, hi = m.get("lo"), m.get("hi")
    if lo is not None:
        below = lo - (rng.randint(1, 10**6) if kind is int else rng.uniform(1e-9, 1e6))
        options += [str(below)] * 3 + ([str(lo)] if m.get("lo_open") else [])
    if hi is not None:
        above = hi + (rng.randint(1, 10**6) if kind is int else rng.uniform(1e-9, 10.0))
        options += [str(above)] * 3 + ([str(hi)] if m.get("hi_open") else [])
    return rng.choice(options)


def misspell(rng: random.Random, key: str, known: set[str]) -> str:
    while True:
        i = rng.randrange(len(key))
        edit = rng.choice(["drop", "double", "swap", "replace", "prefix"])
        if edit == "drop":
            new = key[:i] + key[i + 1 :]
        elif edit == "double":
            new = key[:i] + key[i] + key[i:]
        elif edit == "swap" and i + 1 < len(key):
            new = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
        elif edit == "prefix":
            new = rng.choice(["x", "the_", "max_"]) + key
        else:
            new = key[:i] + rng.choice(string.ascii_lowercase) + key[i + 1 :]
        if new and new.replace("-", "_") not in known and "=" not in new:
            return new


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders to point eval and sample at: whole, corrupted, empty, of another recipe..."""
    root = tmp_path_factory.mktemp("runs")
    recipe = DIGITS().with_overrides(TINY_ARGS["digits"])
    weights = recipe.objective().state_dict()
    made = {}
    for name in ["good", "corrupt", "other_recipe", "other_model", "bad_state", "no_model"]:
        config = recipe.run_config()
        tensors = {"model": weights}
        if name == "other_recipe":
            config = {**config, "recipe": "poems"}
        if name == "other_model":
            tensors = {"model": recipe.with_overrides(["model.dim=24"]).objective().state_dict()}
        ckpt = save_checkpoint(root / name, 3, tensors, config, {})
        if name == "corrupt":
            raw = bytearray((ckpt / "model.safetensors").read_bytes())
            raw[len(raw) // 2] ^= 0x55
            (ckpt / "model.safetensors").write_bytes(bytes(raw))
        if name == "bad_state":
            (ckpt / "state.json").write_text((ckpt / "state.json").read_text()[:40])
        if name == "no_model":
            (ckpt / "model.safetensors").unlink()
        made[name] = root / name
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a run")
    made["empty"], made["file"], made["missing"] = root / "empty", root / "a_file", root / "nope" / "run"
    return made


def invocation(rng: random.Random, runs, keys):
    """(argv, a text the error line must contain)."""
    known = {key for key, _, _ in keys}
    valid = [f"{k}={v}" for k, v in TINY.items()]
    kind = rng.choice(["recipe", "key", "value", "value", "value", "malformed", "flag", "fit", "run",
                       "eval_value", "sample_n", "command", "out_file", "micro"])
    overrides = rng.sample(valid, rng.randint(0, len(valid)))
    if kind == "recipe":
        name = "".join(rng.choices(string.ascii_letters + string.digits + "-_.", k=rng.randint(0, 12)))
        if name == "digits":
            name = "digitz"
        return ["train", name, *overrides], name if name.startswith("-") else "unknown recipe"
    if kind == "command":
        return rng.choice([[], ["trian"], ["recipes", "extra"], ["train"], ["eval"], ["sample"],
                           ["--bogus"], ["train", "digits", "--out"]]), ""
    if kind == "key":
        key, _, _ = rng.choice(keys)
        bad = f"{misspell(rng, key, known)}={rng.choice(['1', 'x', '0.5'])}"
        needle = "unknown key"
    elif kind == "value":
        key, f, typ = rng.choice(keys)
        bad, needle = f"{key}={bad_value(rng, f, typ)}", f"{key}="
    elif kind == "malformed":
        bad = rng.choice(["train.steps", "=5", "=", "train.lr", "model.dim:16", " =1"])
        needle = "key=value" if "=" not in bad or bad.strip().startswith("=") else ""
    elif kind == "flag":
        bad = rng.choice(["--", "-"]) + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 8)))
        needle = ""
    elif kind == "fit":
        heads = rng.randint(2, 7)
        dim = rng.choice([d for d in range(8, 200) if d % heads])
        bad, overrides = f"model.dim={dim}", [o for o in overrides if not o.startswith(("model.dim=", "model.heads="))]
        overrides.append(f"model.heads={heads}")
        needle = "divisible"
    elif kind == "out_file":
        return ["train", "digits", "--out", str(runs["file"]), *valid], "is a file"
    elif kind == "micro":
        return ["train", "digits", *valid, f"train.micro_batch={rng.choice([3, 5, 6, 7, 32])}"], "micro_batch"
    elif kind == "run":
        which = rng.choice(["corrupt", "other_recipe", "other_model", "bad_state", "no_model", "empty", "file",
                            "missing"])
        needle = {"corrupt": "checksum", "other_recipe": "poems", "other_model": "do not fit", "bad_state":
                  "state.json", "no_model": "model.safetensors", "empty": "no usable checkpoint", "file": "is a file",
                  "missing": "does not exist"}[which]
        return [rng.choice(["eval", "sample"]), str(runs[which])], needle
    elif kind == "eval_value":
        key, f, typ = rng.choice(keys)
        bad = f"{key}={bad_value(rng, f, typ)}"
        return [rng.choice(["eval", "sample"]), str(runs["good"]), bad], key
    else:  # sample_n
        n = rng.choice(["0", "-1", "-100", "x", "1.5", ""])
        return ["sample", str(runs["good"]), "--n", n], "--n" if n in ("0", "-1", "-100") else "argument --n"
    overrides = [o for o in overrides if o.split("=")[0] != bad.split("=")[0]]  # the last of a key wins
    overrides.insert(rng.randint(0, len(overrides)), bad)
    return ["train", "digits", *overrides], needle


def test_random_invalid_invocations_end_in_one_line_and_exit_2(runs, monkeypatch):
    trained = []
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: trained.append(a))  # never reached by a bad input
    rng = random.Random(20240607)
    keys = fields()
    seen = set()
    for _ in range(CASES):
        argv, needle = invocation(rng, runs, keys)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(list(argv))
        assert trained == [], argv
        lines = err.getvalue().splitlines()
        assert code == 2, (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue(), argv
        assert lines and lines[-1].startswith("unmask: error: "), (argv, lines)
        assert all(line.startswith("unmask: warning: ") for line in lines[:-1]), (argv, lines)
        assert needle in lines[-1], (argv, needle, lines[-1])
        seen.add(json.dumps(argv))
    assert trained == []
    assert len(seen) >= 200  # distinct invocations


def test_errors_are_one_line_even_when_a_message_has_newlines(monkeypatch, capsys):
    from unmask import recipes
    from unmask.errors import UnmaskError

    def broken(name):
        raise UnmaskError("first line\nsecond line")

    monkeypatch.setattr(recipes, "get", broken)
    assert main(["train", "digits"]) == 2
    assert capsys.readouterr().err == "unmask: error: first line second line\n"
