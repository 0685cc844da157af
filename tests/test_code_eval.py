"""Code evaluation: infilling cases splice back exactly, an oracle fills every file so it parses,
the CM3 prompt, the probe labels, and the recipes' settings."""

import shutil

import pytest
import torch

pytest.importorskip("tokenizers")

from unmask.data import code  # noqa: E402
from unmask.eval import code as code_eval  # noqa: E402
from unmask.sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler  # noqa: E402

SOURCES = ["textwrap.py", "fnmatch.py", "glob.py", "shlex.py", "heapq.py", "bisect.py", "json/decoder.py",
           "json/encoder.py"]
LENGTH = 128
ALL = tuple(SOURCES)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    for rel in SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code.stdlib_root() / rel, root / rel)
    tok = tmp_path_factory.mktemp("run") / "tokenizer.json"
    # test_share 0.6: textwrap.py, fnmatch.py are held out
    return code.load_corpus(length=LENGTH, vocab_size=600, tokenizer_path=tok, root=root, test_share=0.6)


class Oracle:
    """Knows each case's true window: logits put all mass on the true token."""

    def __init__(self, truth, vocab):
        self.truth, self.vocab = truth, vocab

    def __call__(self, tokens):
        rows = [next(i for i, t in enumerate(self.truth) if torch.equal(t[tokens[r] != self.vocab],
                                                                       tokens[r][tokens[r] != self.vocab]))
                for r in range(len(tokens))]
        return torch.nn.functional.one_hot(self.truth[rows], self.vocab).float() * 100


def test_cases_hide_exactly_a_function_body(corpus):
    cases = code_eval.infill_cases(corpus, LENGTH, n=20, max_hidden=90, files=ALL)
    assert len(cases) >= 5
    for case in cases:
        a, b = case.hidden
        assert case.start <= a < b <= case.start + LENGTH and 6 <= b - a <= 90
        text = corpus.source(case.path)
        assert corpus.tokenizer.decode(case.ids) == text
        body = code_eval.original_text(case, corpus)
        assert body.strip() and body in text
        assert case.signature(corpus.tokenizer).lstrip().startswith(("def ", "async def "))
        assert code_eval.parses(corpus.tokenizer.decode(code_eval.splice(case, case.ids[case.start:][:LENGTH],
                                                                          LENGTH)))


@pytest.mark.parametrize("sampler", [MaskGITSampler(4), AncestralSampler(8), FirstHittingSampler()],
                         ids=lambda s: type(s).__name__)
def test_an_oracle_fills_every_body_and_every_file_parses(corpus, sampler):
    cases = code_eval.infill_cases(corpus, LENGTH, n=6, max_hidden=90, files=ALL)
    v = corpus.tokenizer.vocab_size
    truth = torch.stack([torch.tensor(c.ids[c.start : c.start + LENGTH]) for c in cases])
    res = code_eval.infill(Oracle(truth, v), cases, sampler, corpus, LENGTH, v, seed=0)
    assert res.share == 1.0 and all(res.parsed) and res.token_accuracy == 1.0
    assert res.bodies == [code_eval.original_text(c, corpus) for c in cases]
    assert code_eval.unigram_infill(cases, corpus, LENGTH) < 1.0


def test_cm3_prompt_has_the_sentinel_and_an_oracle_restores_the_file(corpus):
    cases = code_eval.infill_cases(corpus, LENGTH, n=3, max_hidden=60, files=ALL)
    tok = corpus.tokenizer
    v = tok.vocab_size

    class Writer(torch.nn.Module):
        """A 'causal model' that, after the second sentinel, writes the case's body then <eos>."""

        def forward(self, tokens):
            row = tokens[0].tolist()
            case = next(c for c in cases if row.count(tok.sentinel_ids[0]) == 2
                        and c.ids[c.hidden[0] - 3 : c.hidden[0]] == row[row.index(tok.sentinel_ids[0]) - 3 :
                                                                        row.index(tok.sentinel_ids[0])])
            body = case.ids[case.hidden[0] : case.hidden[1]] + [tok.eos_id]
            done = len(row) - (row.index(tok.sentinel_ids[0], row.index(tok.sentinel_ids[0]) + 1) + 1)
            out = torch.full((1, len(row), v), -100.0)
            out[0, -1, body[done]] = 100.0
            return out

    res = code_eval.cm3_infill(Writer(), cases, corpus, LENGTH + 40, bos_id=0, seed=0)
    assert res.share == 1.0
    assert res.bodies == [code_eval.original_text(c, corpus) for c in cases]


def test_probe_labels_are_packages_present_in_both_splits(corpus):
    names, tri, ytr, tei, yte = code_eval.probe_labels(corpus, min_train=1, min_test=1)
    packages_tr, packages_te = corpus.train.packages(), corpus.test.packages()
    for i, y in zip(tri.tolist(), ytr.tolist(), strict=True):
        assert packages_tr[i] == names[y]
    for i, y in zip(tei.tolist(), yte.tolist(), strict=True):
        assert packages_te[i] == names[y]
    assert "" not in names  # top-level modules have no package


def test_recipe_settings_build_and_round_trip_through_the_run_config():
    from unmask.errors import UnmaskError
    from unmask.recipes.ar_code import ArCode
    from unmask.recipes.electra_code import ElectraCode
    from unmask.recipes.mdlm_code import MdlmCode
    from unmask.recipes.mlm_code import MlmCode

    for cls in (MlmCode, ElectraCode, MdlmCode, ArCode):
        recipe = cls().with_overrides(["model.dim=16", "model.depth=1", "model.heads=2", "data.vocab_size=300",
                                       "data.length=16"])
        objective = recipe.objective()
        config = recipe.run_config()
        assert config["model"] == recipe.model_dict() and config["model"]["vocab_size"] == 300
        again = cls(cls.settings_from(config, "run")).objective()
        again.load_state_dict(objective.state_dict())  # the same parameters, as load_run needs
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), objective.state_dict().values(),
                                                     strict=True))  # and the same seeded initial weights
        with pytest.raises(UnmaskError, match="train.steps"):
            cls().with_overrides(["train.steps=0"])
    with pytest.raises(UnmaskError, match="objective.masker"):
        MlmCode().with_overrides(["objective.masker=words"])
    emd = MlmCode().with_overrides(["model.emd=true", "model.emd_layers=3"])
    assert emd.model_dict()["emd_layers"] == 3 and "emd_layers" not in MlmCode().model_dict()


def test_real_share_counts_parsing_bodies_with_a_letter_or_digit():
    """A chain of `_` and `.` parses (an attribute chain of the name `_`) but is no code."""
    assert code_eval.parses("def f():\n    ___.__._\n")
    bodies = ["___.__._", "return x", "pass", "  \n", "1 +"]
    res = code_eval.InfillResult(share=0.8, bodies=bodies, parsed=[True, True, True, True, False], nfe=1.0)
    assert res.real_share == 2 / 5  # "return x" and "pass"; "1 +" has a digit but its file did not parse
    real = code_eval.real_body
    assert real("x_1") and real("0") and not real("_._\n  __") and not real("")
