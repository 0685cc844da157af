"""Chorale tokens: exact round trips on real chorales, the grid rules on a hand-made score, MIDI,
windows, transposition, the split and the cache."""

import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

pytest.importorskip("music21")

from unmask.data import music  # noqa: E402
from unmask.errors import UnmaskError  # noqa: E402

REAL = ("bach/bwv66.6", "bach/bwv153.1", "bach/bwv269")
H, R = music.HOLD, music.REST


def p(midi):
    return music.pitch_token(midi)


@pytest.fixture(scope="module")
def scores():
    from music21 import corpus

    return {name: corpus.parse(name) for name in REAL}


@pytest.mark.parametrize("grid", music.GRIDS)
def test_tokens_stream_tokens_is_exact_on_real_chorales(scores, grid):
    for name, score in scores.items():
        tokens = music.encode(score, grid)
        assert tokens.shape == (4, int(np.ceil(float(score.highestTime) * grid)))
        again = music.encode(music.decode(tokens, grid), grid)
        assert np.array_equal(again, tokens), name
        assert [pt.partName for pt in music.decode(tokens, grid).parts] == list(music.VOICES)


def test_sixteenth_grid_keeps_every_note_of_real_chorales(scores):
    for name, score in scores.items():
        tokens = music.encode(score, 4)
        for v, part in enumerate(score.parts):
            truth = [(Fraction(n.offset) * 4, (Fraction(n.offset) + Fraction(n.quarterLength)) * 4, n.pitch.midi)
                     for n in part.stripTies().flatten().notes]
            assert all(a.denominator == 1 and b.denominator == 1 for a, b, _ in truth), name  # all on the grid
            assert music.notes(tokens[v]) == [(int(a), int(b), m) for a, b, m in truth], (name, v)


def hand_made_score():
    """C4 quarter | D4 E4 sixteenths, eighth rest | F4 tied over two quarters | F4 eighth again, G4
    sixteenth, A4 dotted eighth off the eighth grid, B4 eighth; the other voices rest."""
    from music21 import note, stream, tie

    part = stream.Part()
    tied = [note.Note("F4", quarterLength=1), note.Note("F4", quarterLength=1)]
    tied[0].tie, tied[1].tie = tie.Tie("start"), tie.Tie("stop")
    for element in [note.Note("C4", quarterLength=1), note.Note("D4", quarterLength=0.25),
                    note.Note("E4", quarterLength=0.25), note.Rest(quarterLength=0.5), *tied,
                    note.Note("F4", quarterLength=0.5), note.Note("G4", quarterLength=0.25),
                    note.Note("A4", quarterLength=0.75), note.Note("B4", quarterLength=0.5)]:
        part.append(element)
    score = stream.Score()
    score.insert(0, part)
    for _ in range(3):
        other = stream.Part()
        other.append(note.Rest(quarterLength=6))
        score.insert(0, other)
    return score


def test_grid_rules_on_a_hand_made_score():
    score = hand_made_score()
    eighth = music.encode(score, 2)
    # E4 sounds only between grid times: dropped; the tie is one note; the repeated F4 is struck again;
    # A4 starts between grid times: it starts at the next one
    assert eighth[0].tolist() == [p(60), H, p(62), R, p(65), H, H, H, p(65), p(67), p(69), p(71)]
    assert (eighth[1:] == R).all()
    sixteenth = music.encode(score, 4)
    assert sixteenth[0].tolist() == [p(60), H, H, H, p(62), p(64), R, R, p(65), *[H] * 7, p(65), H, p(67),
                                     p(69), H, H, p(71), H]
    back = music.decode(sixteenth, 4).parts[0].flatten().notesAndRests
    assert [(float(e.offset), float(e.quarterLength), e.pitch.midi if e.isNote else None) for e in back] == [
        (0.0, 1.0, 60), (1.0, 0.25, 62), (1.25, 0.25, 64), (1.5, 0.5, None), (2.0, 2.0, 65), (4.0, 0.5, 65),
        (4.5, 0.25, 67), (4.75, 0.75, 69), (5.5, 0.5, 71)]


def test_notes_and_sounding_read_a_dangling_hold_as_rest():
    line = np.array([H, H, p(60), H, R, H, p(62), p(62)])
    assert music.notes(line) == [(2, 4, 60), (6, 7, 62), (7, 8, 62)]
    assert music.sounding(line).tolist() == [-1, -1, 60, 60, -1, -1, 62, 62]


def test_midi_round_trip_of_a_real_chorale(scores, tmp_path):
    tokens = music.encode(scores["bach/bwv66.6"], 2)
    path = music.write_midi(tokens, tmp_path / "c.mid")
    assert path.read_bytes()[:4] == b"MThd"
    assert np.array_equal(music.read_midi(path, 2, tokens.shape[1]), tokens)


def test_window_strikes_a_held_note_again():
    tokens = np.array([[p(60), H, H, p(62)], [R, H, p(50), H], [p(55), p(57), H, H], [H, H, H, H]])
    out = music.window(tokens, 1, 3)
    assert out.tolist() == [[p(60), H, p(62)], [R, p(50), H], [p(57), H, H], [R, H, H]]
    assert tokens[0, 1] == H  # the source is untouched
    with pytest.raises(ValueError, match="does not fit"):
        music.window(tokens, 2, 3)


def test_transpose_moves_pitches_only_and_refuses_to_leave_the_range():
    t = torch.tensor([H, R, p(60), p(91)])
    assert music.transpose(t, -5).tolist() == [H, R, p(55), p(86)]
    with pytest.raises(ValueError, match="pitch range"):
        music.transpose(t, 1)


def test_windows_count_and_shifts():
    c = music.Chorale("x", np.tile(np.array([p(60), H, H, p(62), H]), (4, 4)), 0, False)  # 20 steps
    w = music.windows([c], length=8, hop=5, shifts=(0, 2))
    starts = [0, 5, 10, 12]  # every hop, and one ending at the end
    assert w.shape == (2 * len(starts), 4 * 8)
    for i, s in enumerate(starts):
        assert np.array_equal(w[i].view(4, 8).numpy(), music.window(c.tokens, s, 8))
    assert torch.equal(w[len(starts):], music.transpose(w[: len(starts)], 2))


def test_split_is_by_name_alone():
    names = [f"bach/bwv{i}" for i in range(1000)]
    held = [n for n in names if music.is_held_out(n)]
    assert 70 < len(held) < 130
    chorales = [music.Chorale(n, np.zeros((4, 1), dtype=np.int64), 0, False) for n in names]
    train, test = music.split(chorales)
    assert [c.name for c in test] == held and len(train) + len(test) == len(names)
    assert [c.name for c in music.split(chorales[::-1])[1]] == held[::-1]


def test_corpus_cache_is_read_back_without_parsing(tmp_path, monkeypatch):
    names = list(REAL[:2])
    first = music.load_corpus(tmp_path, names=names)
    assert [c.name for c in first] == names
    assert first[0].tonic == 6 and first[0].minor  # bwv66.6 is in f-sharp minor
    monkeypatch.setattr(music, "load_chorale", lambda *a, **k: pytest.fail("parsed again"))
    again = music.load_corpus(tmp_path, names=names)
    for a, b in zip(first, again, strict=True):
        assert (a.name, a.tonic, a.minor) == (b.name, b.tonic, b.minor)
        assert np.array_equal(a.tokens, b.tokens)


def test_a_chorale_that_is_not_satb_is_refused():
    with pytest.raises(ValueError, match="not"):
        music.load_chorale("bach/bwv248.23-2")  # a chorale with instrumental parts


def test_missing_music21_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(UnmaskError, match=r"pip install 'unmask\[music\]'"):
        music.music21()
