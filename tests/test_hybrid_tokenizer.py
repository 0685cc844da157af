"""The hybrid rule-plus-BPE tokenizer (Tokens with Meaning, P45): exact round trip, the documented
splits, the case markers and affixes, the vocabulary size, and no token across a rule boundary."""

import re
import shutil

import pytest

pytest.importorskip("tokenizers")

from unmask.data import code  # noqa: E402
from unmask.data import hybrid_tokenizer as hy  # noqa: E402

SOURCES = ["keyword.py", "bisect.py", "colorsys.py", "json/__init__.py", "json/decoder.py", "json/encoder.py",
           "textwrap.py", "fnmatch.py", "shlex.py", "heapq.py", "glob.py"]
VOCAB = 700
HAND = [
    "",
    "x",
    "def getHTTPResponse_code2(self):\n\treturn self.__init__()\n",
    "a = 1\r\nb = 2\r\n\r\n\r\nc = 3\r\n",
    "line\rcarriage only\r",
    "\n\n\n    \n\t\t\n",
    "trailing blanks   \t\n",
    "naïve = 'Größe' + \"中文字符\" + '🙂🙂' + 'İstanbul' + 'ß'\n",
    "ÉCOLE_École_école = ΣΑΣ + Ǆemal\n",
    "XMLHttpRequest ABCd A B x_Y __ ___dunder___ _private 0xFF 1e5 3.14j\n",
    "<cap> <upper> is- -s \ue000 literal markers in text\n",
    "HTTPS HTTPServer IOError isinstance getattr unknownThings names NAMES Names\n",
]


@pytest.fixture(scope="module")
def texts():
    return [(code.stdlib_root() / rel).read_text() for rel in SOURCES]


@pytest.fixture(scope="module")
def tok(texts):
    return hy.train_hybrid_tokenizer(texts, VOCAB, min_root_count=3)


def readable(tok, ids):
    names = {hy.CAP_ID: "<cap>", hy.UPPER_ID: "<upper>", **{v: k for k, v in hy.AFFIX_INDEX.items()}}
    return [names.get(i, tok.token_bytes[i].decode("utf-8", "replace")) for i in ids]


@pytest.mark.parametrize("text", HAND)
def test_round_trip_is_byte_exact_on_hand_made_text(tok, text):
    assert tok.decode(tok.encode(text)).encode() == text.encode()


def test_round_trip_is_exact_on_real_code_seen_and_unseen(tok, texts):
    unseen = [(code.stdlib_root() / rel).read_text() for rel in ("shutil.py", "argparse.py", "csv.py")]
    for text in texts + unseen:
        assert tok.decode(tok.encode(text)) == text
    crlf = unseen[2].replace("\n", "\r\n")
    assert tok.decode(tok.encode(crlf)) == crlf


def test_word_rules_split_as_documented():
    assert hy.word_parts("getHTTPResponse_code2") == ["get", "HTTP", "Response", "_", "code", "2"]
    assert hy.word_parts("__init__") == ["__", "init", "__"]
    assert hy.word_parts("ABCd") == ["AB", "Cd"]
    assert hy.word_parts("x2y_naïveName") == ["x", "2", "y", "_", "naïveName"]
    assert [u for u, _, _ in hy.rule_units("getHTTPResponse_code2", frozenset())] == [
        "get", "<upper>", "http", "<cap>", "response", "_", "code", "2"]
    assert [u for u, _, _ in hy.rule_units("__init__", frozenset())] == ["__", "init", "__"]
    # a lone capital is capitalised; non-ASCII letters keep their case (no marker)
    assert [u for u, _, _ in hy.rule_units("X École", frozenset())] == ["<cap>", "x", " ", "École"]


def test_encoding_follows_the_rules(tok):
    assert "|".join(readable(tok, tok.encode("getHTTPResponse_code2"))).replace("|", "") == \
        "get<upper>http<cap>response_code2"
    pieces = readable(tok, tok.encode("__init__"))
    assert pieces[0] == "__" and pieces[-1] == "__" and "".join(pieces[1:-1]) == "init"
    # `Name`, `NAME` and `name` share the root's ids after their marker
    lower = tok.encode("name")
    assert tok.encode("Name") == [hy.CAP_ID, *lower]
    assert tok.encode("NAME") == [hy.UPPER_ID, *lower]


def test_affixes_split_only_onto_roots():
    roots = frozenset({"instance", "name", "attr", "process"})
    assert hy.morphemes("isinstance", roots) == ("is-", "instance")
    assert hy.morphemes("names", roots) == ("name", "-s")
    assert hy.morphemes("getattrs", roots) == ("get-", "attr", "-s")
    assert hy.morphemes("processes", roots) == ("process", "-es")
    assert hy.morphemes("process", roots) == ("process",)  # a root stays whole
    assert hy.morphemes("isotope", roots) == ("isotope",)  # 'otope' is no root
    assert hy.morphemes("Names", roots) == ("Names",)  # only lower-case parts (case is rule 3's)


def test_affixes_get_their_own_ids_and_decode(texts):
    tok = hy.train_hybrid_tokenizer(texts, VOCAB, min_root_count=3)
    tok = hy.HybridTokenizer(tok.bpe, tok.roots | {"widget"})
    ids = tok.encode("widgets = unwidget(Widgets)")
    assert hy.AFFIX_INDEX["-s"] in ids and hy.AFFIX_INDEX["un-"] in ids
    assert ids.count(hy.AFFIX_INDEX["-s"]) == 2
    assert tok.decode(ids) == "widgets = unwidget(Widgets)"
    plain_s = tok.encode("s")
    assert plain_s != [hy.AFFIX_INDEX["-s"]]  # the word `s` is not the suffix


def test_vocabulary_size_is_as_asked_and_saved(tok, texts, tmp_path):
    assert tok.vocab_size == VOCAB == len(tok.token_bytes)
    ids = [i for t in texts for i in tok.encode(t)]
    assert 0 <= min(ids) and max(ids) < VOCAB
    assert hy.CAP_ID == 10 and hy.UPPER_ID == 11 and tok.eos_id == 1 and tok.sentinel_ids == tuple(range(2, 10))
    path = tmp_path / "hybrid.json"
    tok.save(path)
    again = hy.HybridTokenizer.load(path)
    assert again.vocab_size == VOCAB and again.roots == tok.roots
    assert again.encode(texts[3]) == tok.encode(texts[3])
    with pytest.raises(ValueError, match="vocab_size"):
        hy.train_hybrid_tokenizer(texts[:1], hy.BPE_BASE + 100)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([VOCAB])
    (tmp_path / "plain.json").write_text("{}")
    with pytest.raises(ValueError, match="not a hybrid"):
        hy.HybridTokenizer.load(tmp_path / "plain.json")


def classes_crossed(text: str) -> bool:
    """True when `text` mixes what the rules keep apart: blanks, punctuation, underscores, digits,
    letters; or holds a lower-to-upper case step (a camelCase edge)."""
    kinds = {"blank" if c.isspace() else "_" if c == "_" else "digit" if c in "0123456789"
             else "letter" if c.isalpha() else "other" if c.isalnum() else "punct" for c in text}
    return len(kinds) > 1 or re.search(r"[a-z][A-Z]", text) is not None


def test_no_token_crosses_a_rule_boundary(tok, texts):
    unseen = (code.stdlib_root() / "argparse.py").read_text()
    for text in [*texts, unseen, *HAND]:
        ids, offsets = tok.encode_with_offsets(text)
        piece_of = [-1] * len(text)  # each character's rule piece
        for k, (a, b) in enumerate(hy.rule_pieces(text, tok.roots)):
            piece_of[a:b] = [k] * (b - a)
        assert -1 not in piece_of  # the pieces cover the text
        for i, (a, b) in zip(ids, offsets, strict=True):
            if i in (hy.CAP_ID, hy.UPPER_ID):
                continue
            assert len(set(piece_of[a:b])) == 1, (text[a:b], a, b)
            assert not classes_crossed(text[a:b]), repr(text[a:b])


def test_plain_bpe_does_cross_the_boundaries(texts):
    """The boundary check above can fail: byte-level BPE joins a blank to the word after it."""
    plain = code.train_tokenizer(texts, VOCAB)
    text = texts[4]
    ids, offsets = plain.encode_with_offsets(text)
    assert sum(classes_crossed(text[a:b]) for a, b in offsets) > 100


def test_corpus_chunks_and_markers_share_their_word(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    for rel in SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code.stdlib_root() / rel, root / rel)
    path = tmp_path_factory.mktemp("run") / "hybrid.json"
    corpus = hy.load_hybrid_corpus(length=32, vocab_size=VOCAB, tokenizer_path=path, root=root, test_share=0.6)
    assert path.exists() and corpus.tokenizer.vocab_size == VOCAB
    assert len(corpus.train) > 0 and len(corpus.test) > 0
    assert corpus.train.tokens.shape[1] == 32 and int(corpus.train.tokens.max()) < VOCAB
    first = corpus.train.files[int(corpus.train.file_index[0])]
    source = (root / first).read_text()
    assert source.startswith(corpus.tokenizer.decode(corpus.train.tokens[0]))
    toks, words = corpus.train.tokens, corpus.train.word_ids
    marker = (toks[:, :-1] == hy.CAP_ID) | (toks[:, :-1] == hy.UPPER_ID)
    assert marker.any()
    assert (words[:, :-1][marker] == words[:, 1:][marker]).all()  # a marker is part of its identifier
    reloaded = hy.load_hybrid_corpus(length=32, vocab_size=VOCAB, tokenizer_path=path, root=root, test_share=0.6)
    assert (reloaded.train.tokens == corpus.train.tokens).all()
