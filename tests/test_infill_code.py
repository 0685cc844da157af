"""Function-body infilling for CM3 and masked diffusion (benchmarks/infill_code.py): the function-alone
parse check on hand-made bodies, training rows that hide or move exactly the body, CM3 body rows
passing `BodyCausalMasking` unchanged, the same functions found under another tokenizer, and
`cm3_infill`'s token accuracy and stopping with exact toy models."""

import shutil
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("tokenizers")

from unmask.data import code  # noqa: E402
from unmask.eval import code as code_eval  # noqa: E402
from unmask.eval import code_bodies  # noqa: E402
from unmask.masking.cm3 import CausalMasking  # noqa: E402
from unmask.masking.cm3_body import BodyCausalMasking  # noqa: E402
from unmask.sampling import MaskGITSampler  # noqa: E402
from unmask.schedules import Schedule  # noqa: E402

TEXT = ("class A:\n    def f(self):\n        x = [1, 2]\n        return x\n\n    def g(self):\n        return 2\n\n\n"
        "def h(a, b):\n    c = a + b\n    return c * 2\n")
LENGTH = 24


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    for rel in ("textwrap.py", "bisect.py"):
        shutil.copyfile(code.stdlib_root() / rel, root / rel)
    texts = [(root / rel).read_text() for rel in ("textwrap.py", "bisect.py")]
    return code.train_tokenizer(texts, 300), code.train_tokenizer(texts, 400)


def corpus_of(tokenizer, text=TEXT):
    return SimpleNamespace(tokenizer=tokenizer, source=lambda path: text, test=SimpleNamespace(files=("x.py",)))


def cases_of(tokenizer, **kw):
    return code_eval.infill_cases(corpus_of(tokenizer), LENGTH, 10, 1, LENGTH, **kw)


def body_ids(tokenizer, text, case=None):
    """Token ids of a hand-made body whose first line is written without indentation: the first line
    gets the original body's leading blanks (those the signature's last token does not hold)."""
    if case is not None:
        original = tokenizer.decode(case.ids[case.hidden[0] : case.hidden[1]])
        text = original[: len(original) - len(original.lstrip(" "))] + text
    return tokenizer.encode(text)


def test_cases_and_training_windows_hide_exactly_the_body(tokenizers):
    tok = tokenizers[0]
    cases = cases_of(tok)
    assert [c.name for c in cases] == ["h", "f", "g"]  # ast.walk: breadth first
    bodies = ["    c = a + b\n    return c * 2", "        x = [1, 2]\n        return x", "        return 2"]
    for c, want in zip(cases, bodies, strict=True):
        got = code_eval.original_text(c, corpus_of(tok))  # the first line's indentation may sit in the token before
        assert got.lstrip(" ") == want.lstrip(" ")
        assert tok.decode(c.ids[: c.hidden[1]]) == TEXT[: TEXT.index(want) + len(want)]
    assert len(cases_of(tok, per_file=2)) == 2
    tokens, body = code_bodies.body_windows(cases, LENGTH)
    assert tokens.shape == body.shape == (3, LENGTH)
    for c, row, hide in zip(cases, tokens, body, strict=True):
        a, b = c.hidden
        lo = code_eval.window_of(c, LENGTH, b - a)[0]
        assert row.tolist() == c.ids[lo : lo + LENGTH]
        assert hide.sum() == b - a and row[hide].tolist() == c.ids[a:b]
        assert hide.nonzero().squeeze(1).tolist() == list(range(a - lo, b - lo))  # one contiguous run


def test_cm3_body_rows_move_the_whole_body_to_the_end(tokenizers):
    tok = tokenizers[0]
    s, eos = tok.sentinel_ids[0], tok.eos_id
    for c, row in zip(cases_of(tok), code_bodies.cm3_body_rows(cases_of(tok), LENGTH, s, eos).tolist(), strict=True):
        a, b = c.hidden
        k = b - a
        assert len(row) == LENGTH and row[-1] == eos  # nothing of the body is cut
        assert row[-k - 2 : -1] == [s] + c.ids[a:b]  # <mask:0> body <eos>
        source = row[: -k - 2]
        cut = source.index(s)
        assert source.count(s) == 1 and source[:cut] == c.ids[a - cut : a]
        assert source[cut + 1 :] == c.ids[b : b + len(source) - cut - 1]


def test_cm3_body_rows_with_spare_end_in_eos_at_varied_places(tokenizers):
    """spare r: the window is r tokens shorter and r more <eos> follow, so the first <eos> is not always
    at the last place (a causal model would learn to stop by position); every r in 0..spare occurs."""
    tok = tokenizers[0]
    s, eos, spare, length = tok.sentinel_ids[0], tok.eos_id, 3, LENGTH + 8
    cases = cases_of(tok)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        for c, row in zip(cases, code_bodies.cm3_body_rows(cases, length, s, eos, spare, g).tolist(), strict=True):
            a, b = c.hidden
            k = b - a
            first = row.index(eos)
            r = length - 1 - first
            seen.add(r)
            assert 0 <= r <= spare and row[first:] == [eos] * (r + 1)
            assert row[first - k - 1 : first] == [s] + c.ids[a:b]
            lo, hi = code_eval.window_of(c, length - 3 - r, k)
            source = row[: first - k - 1]
            assert source == c.ids[lo:a] + [s] + c.ids[b:hi]
    assert seen == set(range(spare + 1))
    same = code_bodies.cm3_body_rows(cases, length, s, eos)
    assert torch.equal(code_bodies.cm3_body_rows(cases, length, s, eos, 0, g), same)
    assert (same[:, -1] == eos).all()
    with pytest.raises(ValueError, match="spare"):
        code_bodies.cm3_body_rows(cases, length, s, eos, -1)


def test_body_causal_masking_keeps_rewritten_rows_and_rewrites_the_rest(tokenizers):
    tok = tokenizers[0]
    rows = code_bodies.cm3_body_rows(cases_of(tok), LENGTH, tok.sentinel_ids[0], tok.eos_id)
    plain = torch.randint(20, 300, (4, LENGTH), generator=torch.Generator().manual_seed(0))
    batch = torch.cat([plain[:2], rows[:1], plain[2:], rows[1:]])  # rewritten rows at 2, 5, 6
    masking = BodyCausalMasking(tok.sentinel_ids, tok.eos_id, lam=3.0)
    out = masking(batch, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape
    assert torch.equal(out[[2, 5, 6]], batch[[2, 5, 6]])
    expected = CausalMasking(tok.sentinel_ids, tok.eos_id, lam=3.0)(plain, torch.Generator().manual_seed(1))
    assert torch.equal(out[[0, 1, 3, 4]], expected)
    assert not torch.equal(expected, plain)  # lam 3: the plain rows did get spans
    assert torch.equal(masking(rows, None), rows)


def test_function_check_on_hand_made_bodies(tokenizers):
    tok = tokenizers[0]
    h, f, _ = cases_of(tok)
    file = corpus_of(tok)

    def both(case, text):
        ids = body_ids(tok, text, case)
        whole = code_eval.parses(tok.decode(case.ids[: case.hidden[0]] + ids + case.ids[case.hidden[1] :]))
        return whole, code_eval.function_parses(case, ids, tok)

    assert code_eval.function_text(f, f.ids[f.hidden[0] : f.hidden[1]], tok).startswith("if True:\n    def f(self):")
    assert code_eval.function_text(h, body_ids(tok, "pass", h), tok) == "def h(a, b):\n    pass"
    assert both(f, "y = (1,\n            2)\n        return y") == (True, True)
    assert both(f, "return [x for x in") == (False, False)  # an unclosed bracket
    assert both(f, "x = 1\n      return 1") == (False, False)  # indented less than the block it continues
    assert both(h, "c = = 1") == (False, False)  # not Python
    assert both(h, "s = '''\nat column 0'''\n    return s") == (True, True)  # a string line at column 0
    # leaves the method for top-level code: fine alone, but the file's next method is then indented
    assert both(f, "return 1\ny = 2") == (False, True)
    assert code_eval.function_parses(f, [], tok) is False  # an empty body
    assert code_eval.parses(code_eval.original_text(h, file)) is False  # a body alone is not a function


def test_same_functions_under_another_tokenizer(tokenizers):
    small, large = tokenizers
    cases = cases_of(large)
    again = code_bodies.same_functions(cases, corpus_of(large), corpus_of(small), 2 * LENGTH)
    assert [c.name for c in again] == ["h", "f", "g"]
    for c, d in zip(cases, again, strict=True):
        assert code_eval.original_text(c, corpus_of(large)) == code_eval.original_text(d, corpus_of(small))
    assert any(c.hidden[1] - c.hidden[0] != d.hidden[1] - d.hidden[0] for c, d in zip(cases, again, strict=True))
    other = corpus_of(small, TEXT.replace("return c * 2", "return c * 3"))
    with pytest.raises(ValueError, match="def h"):
        code_bodies.same_functions(cases, corpus_of(large), other, 2 * LENGTH)


class Writer:
    """A causal toy model: after the prompt it writes `body` and then `stop`, whatever it is shown."""

    def __init__(self, prompt_length: int, body: list[int], stop: int, vocab: int):
        self.p, self.out, self.vocab = prompt_length, body + [stop], vocab

    def __call__(self, tokens):
        logits = torch.zeros(len(tokens), tokens.shape[1], self.vocab)
        logits[:, -1, self.out[min(tokens.shape[1] - self.p, len(self.out) - 1)]] = 1.0
        return logits


def test_cm3_infill_scores_stopping_and_token_accuracy(tokenizers):
    tok = tokenizers[0]
    corpus = corpus_of(tok)
    length, slack = 40, 8
    h = code_eval.infill_cases(corpus, length, 10, 1, length)[0]
    a, b = h.hidden
    k = b - a
    prompt = length - slack - k  # start token + window of length - 3 - slack with one sentinel + sentinel
    true = h.ids[a:b]
    cases = [h]
    exact = code_eval.cm3_infill(Writer(prompt, true, tok.eos_id, 300), cases, corpus, length, 0, slack, temperature=0)
    assert exact.parsed == [True] and exact.function_parsed == (True,) and exact.token_accuracy == 1.0
    assert exact.body_lengths == (k,)
    half = true[: k // 2]
    short = code_eval.cm3_infill(Writer(prompt, half, tok.eos_id, 300), cases, corpus, length, 0, slack, temperature=0)
    assert short.token_accuracy == pytest.approx(len(half) / k) and short.body_lengths == (len(half),)
    endless = code_eval.cm3_infill(Writer(prompt, true * 9, tok.eos_id, 300), cases, corpus, length, 0, slack,
                                   temperature=0)
    assert endless.body_lengths == (k + slack,)  # never stopped: cut at true length + slack
    assert endless.token_accuracy == 1.0 and endless.parsed == [False]


def test_infill_reports_both_parse_checks(tokenizers):
    tok = tokenizers[0]
    corpus = corpus_of(tok)
    cases = cases_of(tok)
    truth = torch.stack([torch.tensor(c.ids[c.start : c.start + LENGTH]) for c in cases])  # [3, L]

    def oracle(tokens):
        return torch.nn.functional.one_hot(truth, 300).float() * 100

    def brackets(tokens):
        return torch.nn.functional.one_hot(torch.full_like(tokens, tok.encode("(")[0]), 300).float()

    sampler = MaskGITSampler(LENGTH, Schedule("linear"), 0.0, 0.0)
    good = code_eval.infill(oracle, cases, sampler, corpus, LENGTH, 300)
    assert good.parsed == [True] * 3 and good.function_parsed == (True,) * 3 and good.token_accuracy == 1.0
    bad = code_eval.infill(brackets, cases, sampler, corpus, LENGTH, 300)
    assert bad.share == 0.0 and bad.function_share == 0.0 and bad.bodies[0].strip("(") == ""
