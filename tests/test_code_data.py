"""The code corpus: file selection, hash split, lossless BPE, chunks and the Python lexical ids."""

import builtins
import keyword
import shutil

import pytest
import torch

pytest.importorskip("tokenizers")

from unmask.data import code  # noqa: E402

SOURCES = ["keyword.py", "bisect.py", "colorsys.py", "json/__init__.py", "json/decoder.py", "json/encoder.py",
           "json/scanner.py", "textwrap.py", "fnmatch.py", "shlex.py", "heapq.py", "glob.py"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    for rel in SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code.stdlib_root() / rel, root / rel)
    (root / "test").mkdir()
    (root / "test" / "test_x.py").write_text("x = 1\n")
    (root / "site-packages" / "pkg").mkdir(parents=True)
    (root / "site-packages" / "pkg" / "m.py").write_text("y = 2\n")
    tok = tmp_path_factory.mktemp("run") / "tokenizer.json"
    # test_share 0.6 puts json/scanner.py, textwrap.py and fnmatch.py in the test split
    return code.load_corpus(length=32, vocab_size=600, tokenizer_path=tok, root=root, test_share=0.6), tok


def test_files_skip_tests_and_site_packages(corpus):
    c, _ = corpus
    files = code.stdlib_files(root=c.root)
    assert sorted(f.as_posix() for f in files) == sorted(SOURCES)
    assert set(c.train.files) | set(c.test.files) == set(SOURCES)


def test_split_is_by_path_hash_alone():
    assert code.split_of("json/decoder.py", 0.3) == code.split_of("json/decoder.py", 0.3)
    shares = [code.split_of(f"pkg/m{i}.py", 0.1) == "test" for i in range(4000)]
    assert abs(sum(shares) / 4000 - 0.1) < 0.02
    with pytest.raises(ValueError, match="test_share"):
        code.split_of("a.py", 1.5)


def test_tokenizer_is_lossless_cached_and_keeps_special_ids(corpus):
    c, tok = corpus
    assert tok.exists() and c.tokenizer.vocab_size == 600
    again = code.CodeTokenizer.load(tok)
    for rel in SOURCES[:4]:
        text = (c.root / rel).read_text()
        assert c.tokenizer.decode(c.tokenizer.encode(text)) == text
        assert again.encode(text) == c.tokenizer.encode(text)
    assert c.tokenizer.eos_id == code.SPECIAL.index("<eos>")
    assert c.tokenizer.sentinel_ids == tuple(range(2, 10))


def test_chunks_are_consecutive_windows_of_their_file(corpus):
    c, _ = corpus
    split = c.train
    assert split.tokens.shape[1] == 32 and split.word_ids.shape == split.tokens.shape
    for i in [0, len(split) // 2, len(split) - 1]:
        path = split.files[split.file_index[i]]
        ids = c.tokenizer.encode((c.root / path).read_text())
        s = split.start[i].item()
        assert split.tokens[i].tolist() == ids[s : s + 32]


def test_entities_are_identifiers_and_words_are_whole_lexical_tokens(corpus):
    c, _ = corpus
    text = (c.root / "textwrap.py").read_text()
    ids, offsets = c.tokenizer.encode_with_offsets(text)
    words, entities = code.token_groups(text, offsets)
    names = {}
    for j, e in enumerate(entities.tolist()):
        if e >= 0:
            names.setdefault(e, []).append(j)
    assert len(names) > 100
    for e, js in names.items():
        assert js == list(range(js[0], js[-1] + 1))  # an identifier's pieces are contiguous
        name = c.tokenizer.decode([ids[j] for j in js]).strip()
        assert name.isidentifier() and not keyword.iskeyword(name), name
        assert (words[js] == e).all()  # the entity id is its word id
    # builtins used as names are identifiers too; keywords never are
    decoded = {c.tokenizer.decode([ids[j] for j in js]).strip() for js in names.values()}
    assert "len" in decoded and "self" in decoded and not decoded & set(keyword.kwlist)
    assert hasattr(builtins, "len")


def test_missing_tokenizers_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)
    with pytest.raises(ImportError, match="text"):
        code.train_tokenizer(["x = 1\n"], 300)


def test_bad_settings(corpus):
    c, tok = corpus
    with pytest.raises(ValueError, match="600 tokens"):
        code.load_corpus(32, 700, tokenizer_path=tok, root=c.root)
    with pytest.raises(ValueError, match="vocab_size"):
        code.train_tokenizer(["x"], 100)
    assert torch.equal(c.train.head(3).tokens, c.train.tokens[:3])
