"""GenMol's fragment-constrained tasks (`eval/fragment_tasks.py`) and lenient SAFE decoding
(`eval/safe_fix.py`): every output keeps the given fragments' SAFE tokens as its prefix, each task
gives what it says (both ends for a linker, one end for a motif, the scaffold with its attachment
points), the kept rule needs every fragment with an atom at each attachment point, and the task
metrics match a hand count."""

import math

import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("safe")

from unmask.data import molecules  # noqa: E402
from unmask.eval import fragment_tasks as ft  # noqa: E402
from unmask.eval.molecules import decode_safe, qed, sa_score  # noqa: E402
from unmask.eval.safe_fix import decode_safe_fixed  # noqa: E402
from unmask.layout import Layout  # noqa: E402
from unmask.nn import MaskedTokenModel, ModelConfig  # noqa: E402

LENGTH = 48


@pytest.fixture(scope="module")
def corpus():
    return molecules.build_corpus(molecules.bundled_smiles()[::12], length=LENGTH, vocab_size=48, held_out_share=0.3)


@pytest.fixture(scope="module")
def model(corpus):
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(len(corpus.vocab), Layout.seq(LENGTH), dim=16, depth=1, heads=2)).eval()


@pytest.mark.parametrize("task", ft.TASKS)
def test_given_fragments_are_the_unchanged_prefix_of_every_output(task, corpus, model):
    cases = ft.design_cases(corpus, task, 6, seed=0)
    assert len(cases) >= 3
    res = ft.run_task(model, corpus, cases, per_case=3, temperature=1.2, randomness=2.0, seed=1)
    assert len(res.texts) == 3 * len(cases)
    assert not (res.tokens == model.mask_id).any()
    for case, canvas, tokens, text in zip(res.cases, res.canvas, res.tokens, res.texts, strict=True):
        k = len(case.given)
        assert tokens[:k].tolist() == case.given
        assert text.startswith(corpus.vocab.decode(case.given))
        assert case.given[-1] == corpus.vocab.dot_id
        # every new token sits where a mask was, at least 8 of them, right after the given ones
        hidden = canvas == model.mask_id
        assert hidden[k : k + 8].all() and not hidden[:k].any()
        assert torch.equal(tokens[~hidden], canvas[~hidden])


@pytest.mark.parametrize("task", ft.TASKS)
def test_each_case_is_held_by_its_own_source_molecule(task, corpus):
    for case in ft.design_cases(corpus, task, 8, seed=0):
        assert ft.holds_given(case.source, case.fragments)
        assert case.source in corpus.test.smiles


def test_linker_gives_both_ends_and_leaves_a_linker_out():
    from rdkit import Chem

    source = "CC(=O)Nc1ccc(OCCN2CCOCC2)cc1"
    linker = ft.given_fragments("linker", source)
    motif = ft.given_fragments("motif", source)
    parts = linker.split(".")
    assert len(parts) == 2 and all(p.count("[*]") == 1 for p in parts)
    assert motif == parts[0]
    heavy = sum(Chem.MolFromSmiles(p.replace("[*]", "")).GetNumAtoms() for p in parts)
    assert heavy < Chem.MolFromSmiles(source).GetNumAtoms()  # the linker is not given


def test_scaffold_has_one_attachment_per_side_chain():
    # 4-methoxyphenethylamine: benzene ring with two side chains
    assert ft.given_fragments("scaffold", "COc1ccc(CCN)cc1") == "[*]c1ccc([*])cc1"
    assert ft.given_fragments("scaffold", "c1ccccc1") is None  # nothing to decorate
    assert ft.given_fragments("scaffold", "CCCC") is None  # no ring, no scaffold


def test_kept_needs_every_fragment_and_an_atom_at_each_attachment():
    both = "[*]c1ccccc1.[*]C1CC1"
    assert ft.holds_given("c1ccc(CCC2CC2)cc1", both)
    assert not ft.holds_given("c1ccc(CCC)cc1", both)  # the cyclopropyl end is lost
    assert not ft.holds_given("C1CC1c1ccccc1", "[*]c1ccccc1.[*]C1CCC1")
    assert not ft.holds_given("c1ccccc1", "[*]c1ccccc1")  # no atom at the attachment point
    assert ft.holds_given("Cc1ccccc1", "[*]c1ccccc1")
    assert not ft.holds_given(None, "[*]c1ccccc1")
    # the two ends must map to different atoms: one benzene cannot serve as both
    assert not ft.holds_given("Cc1ccccc1", "[*]c1ccccc1.[*]c1ccccc1")


def test_task_metrics_by_hand():
    a, b = "COc1ccc(CCN)cc1", "Cc1ccccc1"  # QED 0.70 / SA 1.4 (good), QED 0.46 (not good)
    assert qed(a) >= 0.6 and sa_score(a) <= 4 and qed(b) < 0.6
    mols = [a, a, None, b, b]
    kept = [True, True, False, True, False]
    m = ft.task_metrics(mols, kept)
    assert m["validity"] == pytest.approx(4 / 5)
    assert m["kept"] == pytest.approx(3 / 5)
    assert m["uniqueness"] == pytest.approx(2 / 3)
    assert m["quality"] == pytest.approx(1 / 5)  # a counted once, b below the QED bar
    assert 0 < m["diversity"] <= 1
    assert math.isnan(ft.task_metrics([a, None], [True, False])["diversity"])


def test_genmol_decoding_drops_only_fragments_that_fail_alone():
    broken = "c12ccccc1.C2CC.C(C)(C)(C)(C)C"  # a pentavalent carbon in the last fragment
    assert decode_safe(broken) is None
    assert decode_safe_fixed(broken) == "CCCc1ccccc1"
    assert decode_safe_fixed("c12ccccc1.C2CC") == decode_safe("c12ccccc1.C2CC") == "CCCc1ccccc1"
    assert decode_safe_fixed("C(C)(C)(C)(C)C") is None
    assert decode_safe_fixed("") is None


def test_bad_input_is_refused(corpus, model):
    with pytest.raises(ValueError, match="task must be one of"):
        ft.given_fragments("linkers", "CCO")
    with pytest.raises(ValueError, match="no cases"):
        ft.run_task(model, corpus, [], per_case=2, temperature=1.0, randomness=0.5)
    with pytest.raises(ValueError, match="one kept flag per sample"):
        ft.task_metrics(["CCO"], [True, False])
