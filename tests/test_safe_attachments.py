"""Bracket SAFE: ring closures that join two fragments (or are left open) become `<n>` tokens, rings
inside a fragment stay digits, and decoding gives back a SMILES string of the same molecule."""

import pytest

from unmask.data.safe_attachments import bracket, ring_number, unbracket


def tokens(text: str) -> list[str]:
    from unmask.data.molecules import tokenize

    return tokenize(text)


def test_ring_numbers_of_tokens():
    assert [ring_number(t) for t in ("1", "9", "%10", "%(123)", "c", "[nH]", "<3>", ".")] == \
        [1, 9, 10, 123, None, None, None, None]


def test_paracetamol_by_hand():
    # the 1s close the benzene ring; the 2s and 3s join fragments
    assert "".join(bracket(tokens("c13ccc(O)cc1.CC2=O.N23"))) == "c1<3>ccc(O)cc1.CC<2>=O.N<2><3>"


def test_a_reused_number_is_paired_with_its_nearest_opening():
    # 1 closes a ring in the first fragment, then opens again and closes in the second: a join
    assert "".join(bracket(tokens("C1CC1C1.C1"))) == "C1CC1C<1>.C<1>"
    # the same number used for a ring in each fragment: no join
    assert "".join(bracket(tokens("C1CC1.C1CC1"))) == "C1CC1.C1CC1"


def test_open_numbers_are_attachments_and_smiles_without_dots_is_unchanged():
    assert "".join(bracket(tokens("c1ccccc1C2.N3"))) == "c1ccccc1C<2>.N<3>"
    assert bracket(tokens("CC(=O)Oc1ccccc1C(=O)O")) == tokens("CC(=O)Oc1ccccc1C(=O)O")
    assert "".join(bracket(tokens("C%10CC%10.C%11.N%11"))) == "C%10CC%10.C<11>.N<11>"


def test_unbracket_numbers_attachments_apart_from_rings():
    assert unbracket("c1<3>ccc(O)cc1.CC<2>=O.N<2><3>") == "c1%53ccc(O)cc1.CC%52=O.N%52%53"
    assert unbracket("C<60>.N<60>") == "C%(110).N%(110)"
    assert unbracket("CC(=O)O") == "CC(=O)O"


def test_bracket_safe_decodes_to_the_same_molecule():
    pytest.importorskip("rdkit")
    pytest.importorskip("safe")
    from unmask.data import molecules
    from unmask.eval.molecules import decode_safe, is_whole

    for smiles in ("CC(=O)Nc1ccc(O)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1OC(=O)C1CC1"):
        code = molecules.encode_safe(smiles)
        text = unbracket("".join(bracket(tokens(code))))
        assert molecules.canonical_smiles(decode_safe(text)) == molecules.canonical_smiles(smiles)
        assert is_whole(text)


def test_the_corpus_with_attachment_tokens_holds_the_same_molecules():
    pytest.importorskip("rdkit")
    pytest.importorskip("safe")
    import torch

    from unmask.data import molecules
    from unmask.eval.molecules import decode_safe

    smiles = molecules.bundled_smiles()[::40]
    plain = molecules.build_corpus(smiles, 64, 64, 0.2)
    brackets = molecules.build_corpus(smiles, 64, 64, 0.2, attachment_tokens=True)
    assert brackets.train.smiles == plain.train.smiles
    assert plain.vocab.brackets is False and brackets.vocab.brackets is True
    assert not any(t.startswith("<unused:") for t in brackets.vocab.tokens)
    joins = [t for t in brackets.vocab.tokens if t.startswith("<") and t != "<pad>"]
    unused = sum(t.startswith("<unused:") for t in plain.vocab.tokens)
    assert joins and len(brackets.vocab) == len(plain.vocab) - unused + len(joins)
    assert torch.equal(brackets.train.smiles_tokens != 0, plain.train.smiles_tokens != 0)
    assert torch.equal(brackets.train.lengths, plain.train.lengths)  # one token for one digit
    ids = {t: i for i, t in enumerate(brackets.vocab.tokens)}
    multi = [i for i, s in enumerate(brackets.train.safe) if "." in s]
    assert multi
    for i in multi:
        row = brackets.train.safe_tokens[i]
        assert any(int(t) in {ids[j] for j in joins} for t in row)
        assert molecules.canonical_smiles(decode_safe(brackets.vocab.decode(row))) == brackets.train.smiles[i]
    for i, s in enumerate(brackets.train.safe):
        if "." not in s:
            assert not any(brackets.vocab.tokens[int(t)] in joins for t in brackets.train.safe_tokens[i])
