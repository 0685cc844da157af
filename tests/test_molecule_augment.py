"""Randomised spellings of training molecules: every row spells its own molecule, the first of each
molecule's rows is the canonical one, the spellings vary (fragment order for SAFE), the draw is
seeded, and spellings the vocabulary cannot hold fall back to the canonical row and are counted."""

import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("safe")

import safe  # noqa: E402

from unmask.data import molecule_augment as aug  # noqa: E402
from unmask.data import molecules  # noqa: E402
from unmask.recipes import get  # noqa: E402

COPIES = 6


@pytest.fixture(scope="module")
def corpus():
    return molecules.build_corpus(molecules.bundled_smiles()[::60], length=64, vocab_size=64, held_out_share=0.2)


@pytest.fixture(scope="module")
def split(corpus):
    """30 training molecules, a third of them of three or more fragments."""
    rows = sorted(range(len(corpus.train)), key=lambda i: -corpus.train.safe[i].count("."))[:10] + list(range(20))
    rows = sorted(set(rows))[:30]
    t = corpus.train
    return molecules.MoleculeSplit([t.smiles[i] for i in rows], [t.safe[i] for i in rows], t.safe_tokens[rows],
                                   t.smiles_tokens[rows])


def molecule_of(text: str, kind: str) -> str:
    return molecules.canonical_smiles(safe.decode(text) if kind == "safe" else text)


@pytest.mark.parametrize("kind", aug.KINDS)
def test_each_row_spells_its_molecule_and_the_first_is_canonical(corpus, split, kind):
    rows, fallbacks = aug.augmented_tokens(split, corpus.vocab, corpus.length, COPIES, kind, seed=0)
    assert rows.shape == (len(split) * COPIES, corpus.length)
    canonical = split.safe_tokens if kind == "safe" else split.smiles_tokens
    assert torch.equal(rows[::COPIES], canonical)
    varied = 0
    for i, smiles in enumerate(split.smiles):
        texts = [corpus.vocab.decode(r) for r in rows[i * COPIES:(i + 1) * COPIES]]
        assert {molecule_of(t, kind) for t in texts} == {smiles}, texts
        varied += len(set(texts)) > 1
        pads = rows[i * COPIES:(i + 1) * COPIES] == molecules.PAD_ID
        assert torch.equal(pads, pads.cummax(1).values)  # padding only on the right
    assert varied >= len(split) // 2
    assert fallbacks < len(split)


def test_safe_spellings_permute_the_fragments(corpus, split):
    rows, _ = aug.augmented_tokens(split, corpus.vocab, corpus.length, COPIES, "safe", seed=0)
    many = [i for i, s in enumerate(split.safe) if s.count(".") >= 2]
    assert len(many) >= 5
    first_fragment_atoms = set()
    for i in many:
        for r in rows[i * COPIES:(i + 1) * COPIES]:
            text = corpus.vocab.decode(r)
            assert text.count(".") == split.safe[i].count(".")  # the same BRICS cuts, in some order
            first = text.split(".")[0]
            first_fragment_atoms.add((i, molecules.canonical_smiles(safe.decode(first))))
    # a molecule whose spellings always begin with the same fragment shows no permutation
    assert sum(sum(1 for j, _ in first_fragment_atoms if j == i) > 1 for i in many) >= len(many) // 2


@pytest.mark.parametrize("kind", aug.KINDS)
def test_the_draw_is_seeded(corpus, split, kind):
    a, _ = aug.augmented_tokens(split, corpus.vocab, corpus.length, 4, kind, seed=3)
    b, _ = aug.augmented_tokens(split, corpus.vocab, corpus.length, 4, kind, seed=3)
    c, _ = aug.augmented_tokens(split, corpus.vocab, corpus.length, 4, kind, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", aug.KINDS)
def test_one_copy_is_the_canonical_rows(corpus, split, kind):
    rows, fallbacks = aug.augmented_tokens(split, corpus.vocab, corpus.length, 1, kind)
    assert torch.equal(rows, split.safe_tokens if kind == "safe" else split.smiles_tokens)
    assert fallbacks == 0


def test_spellings_the_vocabulary_cannot_hold_fall_back_and_are_counted(corpus, split, monkeypatch):
    drawn = iter(["C[Xe]C", None, "C" * (corpus.length + 1)] * len(split) * COPIES)
    monkeypatch.setattr(aug, "random_safe", lambda smiles, seed: next(drawn))
    rows, fallbacks = aug.augmented_tokens(split, corpus.vocab, corpus.length, COPIES, "safe")
    assert fallbacks == len(split) * (COPIES - 1)
    assert torch.equal(rows, split.safe_tokens.repeat_interleave(COPIES, 0))


def test_a_longer_row_than_the_canonical_one_is_kept_when_it_fits(corpus, split, monkeypatch):
    monkeypatch.setattr(aug, "random_safe", lambda smiles, seed: "CCCC.C1CC1")
    rows, fallbacks = aug.augmented_tokens(split, corpus.vocab, corpus.length, 2, "safe")
    assert fallbacks == 0
    assert corpus.vocab.decode(rows[1]) == "CCCC.C1CC1"
    assert rows[1, 10:].eq(molecules.PAD_ID).all()


def test_bad_arguments_are_refused(corpus, split):
    with pytest.raises(ValueError, match="kind"):
        aug.augmented_tokens(split, corpus.vocab, corpus.length, 2, "selfies")
    with pytest.raises(ValueError, match="copies"):
        aug.augmented_tokens(split, corpus.vocab, corpus.length, 0, "safe")


def test_the_recipe_trains_both_models_on_the_spellings(tmp_path):
    recipe = get("genmol")().with_overrides(["data.subsample=60", "data.augment=3"])

    class Run:  # the corpus reads and writes the run's vocabulary only
        folder = tmp_path
        files: dict = {}

        def has(self, name):
            return name in self.files

        def write_json(self, name, value):
            self.files[name] = value

        def read_json(self, name):
            return self.files[name]

    run = Run()
    data = recipe.training_data(run)
    mols = recipe.corpus(run)
    assert data["tokens"].shape == (3 * len(mols.train), mols.length)
    assert torch.equal(data["tokens"][::3], mols.train.safe_tokens)
    assert torch.equal(data["prompt"], data["tokens"] == molecules.PAD_ID)
    smiles = recipe.training_rows(run, "smiles")
    assert torch.equal(smiles[::3], mols.train.smiles_tokens)
    assert not torch.equal(smiles[1::3], mols.train.smiles_tokens)
