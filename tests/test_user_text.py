"""Users' own text for the code recipes (`data.source`): every format read through `unmask train`
at tiny sizes, with the exact counts of `RUN/data.json`, a decoded chunk equal to its source text,
the hash split, and one-line refusals of data that cannot be used."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tokenizers")

from conftest import TINY, merged  # noqa: E402
from unmask.data import code, user_text  # noqa: E402
from unmask.recipes import Run, get  # noqa: E402

EOT = "<|endoftext|>"
SIZES = ["data.vocab_size=270", "data.length=16"]
ARGS = ["--no-progress", *TINY["mlm-code"], *SIZES]

pytestmark = pytest.mark.usefixtures("one_thread")


def python_text(k: int) -> str:
    return "".join(f"def f{k}_{i}(x, y):\n    total = x + y * {i}\n    return total - {k}\n\n" for i in range(6))


def prose(k: int) -> str:
    return " ".join(f"Line {i} of note {k}: the quick brown fox jumps over the lazy dog." for i in range(8)) + "\n"


def train(cli, tmp_path, source, *extra, recipe="mlm-code"):
    out = tmp_path / "run"
    ran = cli("train", recipe, f"data.source={source}", "--out", out, "--no-progress",
              *merged([*TINY[recipe], *SIZES], *extra))
    assert ran.code == 0, ran.err
    return out, json.loads((out / "data.json").read_text())


def counts(stats: dict) -> dict:
    return {reason: v["count"] for reason, v in stats["skipped_by_reason"].items()}


def check_decodes(out, source, texts: dict, *extra):
    """Each split's chunks, decoded in order, are its documents joined by <|endoftext|> (the tail cut)."""
    recipe = get("mlm-code")().with_overrides([a for a in ARGS if "=" in a] + [f"data.source={source}", *extra])
    corpus = recipe.corpus(Run(out))
    for split in (corpus.train, corpus.test):
        decoded = corpus.tokenizer.decode(split.tokens.flatten())
        expected = "".join(texts[name] + EOT for name in split.files)
        assert decoded == expected[: len(decoded)]
        assert len(decoded) >= len(texts[split.files[0]]) or len(split.files) == 1
    return corpus


def one_error_line(cli, source, *extra) -> str:
    ran = cli("train", "mlm-code", f"data.source={source}", "--out", "/nonexistent/never-written",
              *merged(ARGS, *extra))
    assert ran.code == 2, ran
    assert ran.err.count("\n") == 1 and ran.err.startswith("unmask: error: ") and "Traceback" not in ran.err
    return ran.err


def test_a_text_folder_counts_binary_and_empty_files_and_decodes_each_document(cli, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / ".git").mkdir()
    texts = {"main.py": python_text(0), "pkg/notes.txt": prose(1)}
    for name, text in texts.items():
        (src / name).write_text(text)
    (src / "logo.bin").write_bytes(bytes(range(256)) * 4)  # NUL bytes: binary
    (src / "latin1.md").write_bytes("caf\xe9 na\xefve".encode("latin-1"))  # not UTF-8
    (src / "empty.txt").write_text("")
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # hidden: not read
    out, stats = train(cli, tmp_path, src)
    assert (stats["files"], stats["examples"], stats["skipped"]) == (5, 2, 3)
    assert counts(stats) == {"not UTF-8 text": 2, "empty file": 1}
    assert sorted(stats["skipped_by_reason"]["not UTF-8 text"]["examples"]) == ["latin1.md", "logo.bin"]
    check_decodes(out, src, texts)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "heldout_accuracy" in metrics and "probe_accuracy" not in metrics  # no package labels
    report = (out / "report.md").read_text()
    assert "package probe is skipped" in report and "2 examples from 5 files" in report


def test_a_glob_takes_only_what_it_matches(cli, tmp_path):
    src = tmp_path / "repo"
    (src / "a" / "b").mkdir(parents=True)
    texts = {"a/one.py": python_text(1), "a/b/two.py": python_text(2)}
    for name, text in texts.items():
        (src / name).write_text(text)
    (src / "a" / "README.md").write_text(prose(3))
    out, stats = train(cli, tmp_path, f"{src}/**/*.py")
    assert (stats["files"], stats["examples"], stats["skipped"]) == (2, 2, 0)
    check_decodes(out, f"{src}/**/*.py", texts)  # names relative to the glob's folder


def test_json_lines_count_each_bad_row_by_reason(cli, tmp_path):
    rows = [{"body": prose(i), "id": i} for i in range(5)]
    lines = [json.dumps(r) for r in rows]
    lines[1:1] = ['{"id": 7}', '{"body": 42}', '{"body": ""}', "{not json", "", '["a", "list"]']
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out, stats = train(cli, tmp_path, path, "data.text_column=body")
    assert (stats["files"], stats["examples"], stats["skipped"]) == (1, 5, 5)
    assert counts(stats) == {"missing column": 1, "not a string": 1, "empty text": 1, "not a JSON object": 2}
    assert stats["skipped_by_reason"]["not a JSON object"]["examples"] == ["notes.jsonl:5", "notes.jsonl:7"]
    line_of = {0: 0, 1: 7, 2: 8, 3: 9, 4: 10}  # row -> line index, past the bad lines
    check_decodes(out, path, {f"notes.jsonl#{line_of[i]}": r["body"] for i, r in enumerate(rows)},
                  "data.text_column=body")


def test_a_parquet_file_is_read_with_pyarrow(cli, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    values = [prose(0), None, python_text(1), prose(2)]
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": values, "n": list(range(4))}), path, row_group_size=2)
    out, stats = train(cli, tmp_path, path)
    assert (stats["files"], stats["examples"], counts(stats)) == (1, 3, {"missing column": 1})
    check_decodes(out, path, {f"corpus.parquet#{i}": v for i, v in enumerate(values) if v})


def test_a_saved_datasets_folder(cli, tmp_path):
    datasets = pytest.importorskip("datasets")
    values = [prose(0), python_text(1), "   ", prose(3)]
    folder = tmp_path / "saved"
    with user_text.quiet(datasets):
        datasets.Dataset.from_dict({"text": values}).save_to_disk(str(folder))
    out, stats = train(cli, tmp_path, folder)
    assert (stats["files"], stats["examples"], counts(stats)) == (1, 3, {"empty text": 1})
    check_decodes(out, folder, {f"#{i}": v for i, v in enumerate(values) if v.strip()})


def test_a_saved_dataset_dict_reads_every_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dict"
    with user_text.quiet(datasets):
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b", None]}),
                              "validation": datasets.Dataset.from_dict({"text": ["c"]})}).save_to_disk(str(folder))
    read = user_text.read_documents(str(folder))
    assert [d.name for d in read.documents] == ["train#0", "train#1", "validation#0"]
    assert (read.stats.files, read.stats.skips.counts) == (2, {"missing column": 1})


def test_a_parquet_set_is_streamed_with_datasets(cli, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(user_text, "_parquet_rows", None)  # the set must not take the single-file path
    shards = tmp_path / "shards"
    shards.mkdir()
    texts = {}
    for k in range(2):
        values = [prose(3 * k), python_text(3 * k + 1), 5 if k else prose(9)]
        pq.write_table(pa.table({"text": [v if isinstance(v, str) else None for v in values]}),
                       shards / f"part-{k}.parquet")
        texts |= {f"part-{k}.parquet#{i}": v for i, v in enumerate(values) if isinstance(v, str)}
    out, stats = train(cli, tmp_path, shards)
    assert (stats["files"], stats["examples"], counts(stats)) == (2, 5, {"missing column": 1})
    check_decodes(out, shards, texts)


def test_one_text_file_is_split_by_window(cli, tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("".join(prose(k) for k in range(12)))
    out, stats = train(cli, tmp_path, path, recipe="mdlm-code")
    assert (stats["files"], stats["examples"], stats["skipped"]) == (1, 1, 0)
    recipe = get("mdlm-code")().with_overrides([*TINY["mdlm-code"], *SIZES, f"data.source={path}"])
    corpus = recipe.corpus(Run(out))
    windows = len(corpus.train) + len(corpus.test)
    held = [k for k in range(windows) if code.split_of(f"book.txt@{k}") == "test"]
    assert corpus.test.tokens.tolist() == [corpus.tokenizer.encode(path.read_text())[16 * k : 16 * k + 16]
                                           for k in held]
    assert json.loads((out / "metrics.json").read_text())["infill_cases"] == 0  # prose: nothing to infill


@pytest.mark.parametrize("recipe", ["electra-code", "mdlm-code", "ar-code"])
def test_the_other_code_recipes_train_on_a_folder(recipe, cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(4):
        (src / f"m{k}.py").write_text(python_text(k))
    out = tmp_path / "run"
    ran = cli("train", recipe, f"data.source={src}", "--out", out, "--no-progress", *TINY[recipe],
              "data.vocab_size=270", "data.length=64")  # infilling centres a body of up to 40 tokens
    assert ran.code == 0, ran.err
    assert json.loads((out / "data.json").read_text())["examples"] == 4
    if recipe == "mdlm-code":  # held-out Python: function bodies to fill
        assert json.loads((out / "metrics.json").read_text())["infill_cases"] >= 1


def test_the_split_hashes_each_name_and_does_not_depend_on_other_documents():
    docs = [user_text.Document(f"rows.jsonl#{i}", f"text {i}") for i in range(60)]
    train, test = user_text.split_documents(docs)
    assert [d.name for d in test] == [d.name for d in docs if code.split_of(d.name) == "test"] and test
    more = docs + [user_text.Document(f"rows.jsonl#{i}", "new") for i in range(60, 90)]
    assert set(d.name for d in test) <= set(d.name for d in user_text.split_documents(more)[1])
    _, fallback = user_text.split_documents(docs[:3])  # none falls in 10%: the lowest hash is held out
    assert len(fallback) == 1


def test_a_truncated_parquet_file_is_one_line_naming_it(cli, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [prose(0)] * 20}), good)
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "cut.parquet" in one_error_line(cli, bad) and "truncated or corrupt" in one_error_line(cli, bad)
    shards = tmp_path / "set"
    shards.mkdir()
    (shards / "a.parquet").write_bytes(good.read_bytes())
    (shards / "b.parquet").write_bytes(bad.read_bytes())
    err = one_error_line(cli, shards)
    assert "b.parquet" in err and "truncated or corrupt" in err


def test_a_missing_column_is_one_line_naming_the_file_and_the_columns(cli, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"content": "x"}\n{"content": "y"}\n')
    err = one_error_line(cli, rows)
    assert "rows.jsonl" in err and "no column 'text' (columns: content)" in err
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"]}), table)
    assert "no column 'text' (columns: body)" in one_error_line(cli, table)


def test_an_empty_or_unusable_source_is_one_line(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no data files" in one_error_line(cli, empty)
    (empty / "blank.txt").write_text("\n")
    (empty / "blob.bin").write_bytes(b"\x00\x01")
    err = one_error_line(cli, empty)
    assert "no document to train on (empty file: 1; not UTF-8 text: 1)" in err
    assert "no such file or folder" in one_error_line(cli, tmp_path / "missing")
    short = tmp_path / "short"
    short.mkdir()
    for k in range(3):
        (short / f"{k}.txt").write_text(prose(k))
    assert "less than one window of data.length=4096" in one_error_line(cli, short, "data.length=4096")
