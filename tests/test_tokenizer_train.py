"""`unmask tokenizer train` (BPE and WordPiece on what `data.source` reads) and `data.tokenizer`
(a tokenizer.json or a model folder holding one): the specials the code recipes need, the sizes, and
one-line refusals."""

from __future__ import annotations

import json

import pytest

tokenizers = pytest.importorskip("tokenizers")

from conftest import TINY  # noqa: E402
from unmask.data import code  # noqa: E402

TEXT = "".join(f"def area_{i}(width, height):\n    return width * height + {i}\n\n" for i in range(40))
TRAIN = ["--no-progress", *TINY["mlm-code"], "data.length=16"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def corpus(tmp_path):
    """A JSON Lines file of ten code rows and one row without text."""
    path = tmp_path / "rows.jsonl"
    rows = [json.dumps({"code": TEXT[i * 200 : (i + 1) * 200]}) for i in range(10)] + ['{"other": 1}']
    path.write_text("\n".join(rows) + "\n")
    return path


def one_error_line(ran) -> str:
    assert ran.code == 2, ran
    assert ran.err.count("\n") == 1 and ran.err.startswith("unmask: error: ") and "Traceback" not in ran.err
    return ran.err


def test_bpe_has_the_specials_first_reaches_its_size_and_decodes_exactly(cli, corpus, tmp_path):
    out = tmp_path / "tok" / "bpe.json"
    ran = cli("tokenizer", "train", corpus, "--out", out, "--vocab-size", "300", "--text-column", "code")
    assert ran.code == 0, ran.err
    assert f"wrote {out} (bpe, 300 tokens, trained on 10 documents)" in ran.out
    tok = tokenizers.Tokenizer.from_file(str(out))
    assert [tok.token_to_id(s) for s in code.SPECIAL] == list(range(10)) and tok.get_vocab_size() == 300
    sample = "def area_99(w, h):\n\treturn w * h  # ünïcode\n"
    assert tok.decode(tok.encode(sample).ids, skip_special_tokens=False) == sample


def test_wordpiece_has_the_specials_then_unk_and_splits_unseen_words(cli, corpus, tmp_path):
    out = tmp_path / "wp.json"
    ran = cli("tokenizer", "train", corpus, "--out", out, "--kind", "wordpiece", "--vocab-size", "120",
              "--text-column", "code")
    assert ran.code == 0, ran.err
    tok = tokenizers.Tokenizer.from_file(str(out))
    assert [tok.token_to_id(s) for s in (*code.SPECIAL, "[UNK]")] == list(range(11))
    assert 11 < tok.get_vocab_size() <= 120
    assert tok.model.__class__.__name__ == "WordPiece"
    pieces = tok.encode("return widthheight").tokens
    assert pieces[0] == "return" and any(p.startswith("##") for p in pieces) and "[UNK]" not in pieces


def test_a_trained_tokenizer_serves_a_run_from_its_model_folder(cli, corpus, tmp_path):
    folder = tmp_path / "model"
    ran = cli("tokenizer", "train", corpus, "--out", folder / "tokenizer.json", "--kind", "wordpiece",
              "--vocab-size", "120", "--text-column", "code")
    assert ran.code == 0, ran.err
    size = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    out = tmp_path / "run"
    ran = cli("train", "mlm-code", f"data.source={corpus}", "data.text_column=code", f"data.tokenizer={folder}",
              f"data.vocab_size={size}", "--out", out, *TRAIN)
    assert ran.code == 0, ran.err
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    ran = cli("train", "mlm-code", f"data.source={corpus}", "data.text_column=code", f"data.tokenizer={folder}",
              "data.vocab_size=300", "--out", tmp_path / "other", *TRAIN)
    assert f"holds {size} tokens; data.vocab_size is 300" in one_error_line(ran)


def test_a_tokenizer_without_the_specials_is_refused_naming_them(cli, corpus, tmp_path):
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([TEXT], trainers.WordPieceTrainer(vocab_size=100, show_progress=False,
                                                               special_tokens=["[PAD]", "[UNK]", "<eos>"]))
    folder = tmp_path / "bert-like"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    ran = cli("train", "mlm-code", f"data.source={corpus}", "data.text_column=code", f"data.tokenizer={folder}",
              f"data.vocab_size={tok.get_vocab_size()}", "--out", tmp_path / "run", *TRAIN)
    err = one_error_line(ran)
    assert "lacks the special tokens the code recipes need: <|endoftext|> (id 0), <eos> (id 1), <mask:0> (id 2)" in err
    assert "unmask tokenizer train" in err


def test_bad_tokenizer_paths_and_sizes_are_one_line(cli, corpus, tmp_path):
    base = ["train", "mlm-code", f"data.source={corpus}", "data.text_column=code", "--out", tmp_path / "run", *TRAIN]
    assert "folder without tokenizer.json" in one_error_line(cli(*base, f"data.tokenizer={tmp_path}"))
    assert "no such file or folder" in one_error_line(cli(*base, f"data.tokenizer={tmp_path / 'nope.json'}"))
    (tmp_path / "junk.json").write_text("{}")
    assert "is not a tokenizer.json" in one_error_line(cli(*base, f"data.tokenizer={tmp_path / 'junk.json'}"))
    err = one_error_line(cli(*base))  # the default 8,192 tokens: far more than ten rows give
    assert "yields only" in err and "set data.vocab_size=" in err
    err = one_error_line(cli(*base, "data.vocab_size=100"))
    assert "data.vocab_size=100 is too small for the byte-level BPE" in err
    assert "at least 266" in one_error_line(cli("tokenizer", "train", corpus, "--vocab-size", "100",
                                                "--text-column", "code", "--out", tmp_path / "t.json"))
    assert "no column 'text' (columns: code, other)" in one_error_line(cli("tokenizer", "train", corpus))
