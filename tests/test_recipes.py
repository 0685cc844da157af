"""The recipe contract, over every recipe of `unmask recipes`: each is a `Recipe` with sectioned,
typed settings; `unmask train NAME ... --out R`, `unmask eval R` and `unmask sample R --n 4 --out X`
work at tiny sizes; a wrong key, value or type in any section is one error line with exit 2."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import TINY
from unmask.config import int_list, is_section, keys, leaves, to_dict
from unmask.errors import UnmaskError
from unmask.recipes import RECIPES, Recipe, Run, get
from unmask.recipes.report import Report

NAMES = sorted(RECIPES)


def test_every_recipe_has_tiny_settings_here():
    assert set(TINY) == set(RECIPES)


@pytest.mark.parametrize("name", NAMES)
def test_a_recipe_is_a_recipe_with_sections(name):
    cls = get(name)
    assert issubclass(cls, Recipe) and cls.name == name and cls.papers and cls.summary
    assert cls.sample_suffix.startswith(".")
    settings = cls().settings
    fields = dataclasses.fields(settings)
    assert all(is_section(f) for f in fields), "every setting lives in a section"
    assert fields[0].name == "train" and type(settings.train).__name__ == "TrainConfig"
    assert {"train", "model"} <= {f.name for f in fields}


def bad_inputs(f, kind) -> list[tuple[str, str]]:
    """(text, what the error says) for a wrong type and each wrong value of one setting."""
    m = f.metadata
    out = []
    if kind in (int, float):
        out.append(("x", "is not an integer" if kind is int else "is not a number"))
    if kind is bool:
        out.append(("maybe", "is not a boolean"))
    if m.get("choices"):
        out.append(("987654" if kind in (int, float) else "nosuch", "is not allowed"))
    step = 1 if kind is int else 1.0
    if m.get("lo") is not None:
        out.append((str(m["lo"] if m["lo_open"] else m["lo"] - step), "is out of range"))
    if m.get("hi") is not None:
        out.append((str(m["hi"] if m["hi_open"] else m["hi"] + step), "is out of range"))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_refuses_a_wrong_key_value_and_type_in_one_line(name, cli):
    settings = get(name)().settings
    for section in {key.split(".", 1)[0] for key in keys(settings)}:
        ran = cli("train", name, f"{section}.nosuch=1")
        assert ran.code == 2 and f"unknown key '{section}.nosuch'" in ran.err
    for key, f, kind in leaves(settings):
        for text, needle in bad_inputs(f, kind):
            ran = cli("train", name, f"{key}={text}", "--out", "/nonexistent/never-written")
            assert ran.code == 2, (key, text, ran)
            assert ran.err.count("\n") == 1 and ran.err.startswith("unmask: error: "), ran.err
            assert f"{key}=" in ran.err and needle in ran.err, (key, text, ran.err)


@pytest.mark.parametrize("name", NAMES)
def test_train_eval_sample_at_tiny_sizes(name, tmp_path, cli, one_thread, request):
    out = tmp_path / "run"
    extra = [f"data.cache={request.getfixturevalue('chorales_cache')}"] if name == "chorales" else []
    ran = cli("train", name, "--out", out, "--no-progress", *TINY[name], *extra)
    assert ran.code == 0, ran.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics and (out / "report.md").read_text().startswith("# ")
    config = json.loads(next((out / "checkpoints").iterdir()).joinpath("config.json").read_text())
    settings = get(name)().with_overrides(TINY[name] + extra).settings
    assert config["recipe"] == name and config["settings"] == to_dict(settings)
    ran = cli("eval", out)
    assert ran.code == 0, ran.err
    assert json.loads((out / "metrics.json").read_text()).keys() == metrics.keys()
    ran = cli("sample", out, "--n", "4", "--out", tmp_path / "drawn" / "x")
    assert ran.code == 0, ran.err
    written = tmp_path / "drawn" / f"x{get(name).sample_suffix}"
    assert written.is_file() and written.stat().st_size > 0 and f"wrote {written}" in ran.out


@pytest.mark.parametrize("name", NAMES)
def test_training_a_recipes_objective_syncs_the_host_once_per_logged_step(name, tmp_path, one_thread, request):
    from host_syncs import assert_sync_budget

    extra = [f"data.cache={request.getfixturevalue('chorales_cache')}"] if name == "chorales" else []
    recipe = get(name)().with_overrides(TINY[name] + extra)
    run = Run(tmp_path / "run", progress=False)
    objective, data = recipe.objective(), recipe.training_data(run)
    recipe.prepare(run, objective, data)
    seen = assert_sync_budget(objective, data, steps=6, log_every=3, batch_size=4)
    assert seen.count >= 1  # the counter sees the trainer's own read at its logged steps


def test_a_report_renders_declared_rows_with_baselines_and_direction(tmp_path):
    from unmask.recipes.report import Metric, Table

    report = Report("t", "set-up.", (Table((Metric("a", "A", "b", "lower"), Metric("c", "C", 0.5, "higher", "c_std"),
                                            Metric("missing", "M"))),),
                    (("fig", "f.png"),))
    Run(tmp_path).write_results({"a": 1.0, "b": 2.0, "c": 0.25, "c_std": 0.01}, report)
    text = (tmp_path / "report.md").read_text()
    assert "| A | 1.0000 | 2.0000 (b) | lower | yes |" in text
    assert "| C | 0.2500 +- 0.0100 | 0.5000 | higher | no |" in text
    assert "| M |" not in text and "![fig](f.png)" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["c"] == 0.25


def test_digits_mask_shares_build_the_mixture_they_name_and_must_not_exceed_one(cli):
    """block_share and edge_share rows hide pixels only, in blocks or from an edge; the rest at random."""
    import torch

    from unmask.data import digits
    from unmask.masking import MixtureMask

    recipe = get("digits")().with_overrides(["objective.block_share=0.2", "objective.edge_share=0.3"])
    masker = recipe.build().masker
    assert isinstance(masker, MixtureMask) and masker.weights == pytest.approx((0.5, 0.2, 0.3))
    ratio = torch.full((3000, 2), 0.5, dtype=torch.float64)
    ratio[:, 0] = 1.0
    mask = masker(digits.LAYOUT, 3000, ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert mask[:, 0].double().mean().item() == pytest.approx(0.5, abs=0.03)  # only random rows hide the label
    pixels = mask[:, 1:].view(-1, 8, 8)
    halves = (pixels[:, :4].all((1, 2)) | pixels[:, 4:].all((1, 2)) | pixels[:, :, :4].all((1, 2))
              | pixels[:, :, 4:].all((1, 2)))
    assert halves.double().mean().item() == pytest.approx(0.3, abs=0.03)  # the edge rows hide a half
    plain = get("digits")().with_overrides(["objective.block_share=0", "objective.edge_share=0"])
    assert type(plain.build().masker).__name__ == "RandomMask"
    ran = cli("train", "digits", "objective.block_share=0.6", "objective.edge_share=0.5")
    assert ran.code == 2 and "objective.block_share + objective.edge_share = 1.1 is more than 1" in ran.err


@pytest.mark.parametrize("text, kwargs, expected", [
    ("3,3,2", {"lo": 1}, (3, 3, 2)), ("7", {"lo": 2}, (7,)), ("1, 2", {"lo": 1, "count": 2}, (1, 2))])
def test_int_list_reads_comma_separated_integers(text, kwargs, expected):
    assert int_list("a.key", text, **kwargs) == expected


@pytest.mark.parametrize("text, kwargs", [
    ("", {"lo": 1}), ("3,x", {"lo": 1}), ("3,,2", {"lo": 1}), ("1,2", {"lo": 2}), ("2,2", {"lo": 1, "count": 3}),
    ("0", {"lo": 1})])
def test_int_list_names_the_key_on_bad_text(text, kwargs):
    with pytest.raises(UnmaskError, match=r"a\.key must be .*integers >= \d"):
        int_list("a.key", text, **kwargs)
