"""Chorale metrics on hand-made pieces whose answers are counted by hand, and the unigram baseline."""

import numpy as np
import pytest
import torch

from unmask.data import music
from unmask.eval import music as metrics

H, R = music.HOLD, music.REST


def p(midi):
    return music.pitch_token(midi)


def piece(*voices):
    """Four voices given as lists of MIDI pitches (None: hold, "r": rest) -> int [4, T]."""
    rows = [[H if x is None else R if x == "r" else p(x) for x in v] for v in voices]
    return np.array(rows, dtype=np.int64)


def test_a_constructed_parallel_fifth_counts_one():
    # soprano C5 -> D5 over alto F4 -> G4: a fifth moving up by step in both voices; tenor and bass hold
    x = piece([72, None, 74, None], [65, None, 67, None], [57, None, None, None], [41, None, None, None])
    assert metrics.parallels(x) == (1, 0)
    assert metrics.parallels(x, voices=(2, 3)) == (0, 0)  # the soprano-alto pair holds no generated voice


def test_parallel_octaves_unisons_and_what_does_not_count():
    octave = piece([72, 74], [67, 65], [55, 57], [60, 62])  # soprano and bass in octaves, both up a step
    assert metrics.parallels(octave) == (0, 1)
    unison = piece([72, 72], [60, 62], [60, 62], [48, 48])  # alto and tenor in unison, both up
    assert metrics.parallels(unison) == (0, 1)
    contrary = piece([67, 72], [64, 64], [55, 55], [60, 53])  # fifth to twelfth by contrary motion
    assert metrics.parallels(contrary) == (0, 0)
    oblique = piece([72, 74], [65, 65], [57, 57], [48, 48])  # one voice holds its pitch
    assert metrics.parallels(oblique) == (0, 0)
    through_rest = piece([72, "r", 74], [65, "r", 67], [57, 57, 57], [48, 48, 48])  # a rest breaks the motion
    assert metrics.parallels(through_rest) == (0, 0)


def test_in_key_counts_notes_and_minor_keeps_its_leading_tone():
    x = piece([72, None, None], [64, 66, 65], [60, None, None], ["r", "r", "r"])  # alto E4 F#4 F4, tenor C4
    assert metrics.in_key(x, tonic=0, minor=False) == (3, 4)  # E, F, C in C major; F# is not
    a_minor = piece([69], [68], [67], [66])  # A4 | G#4, G4, F#4: all in A minor (harmonic + melodic)
    assert metrics.in_key(a_minor, tonic=9, minor=True) == (3, 3)
    assert metrics.in_key(piece([69], [61], [63], [70]), tonic=9, minor=True) == (0, 3)  # C#, D#, A#


def test_range_violations_count_notes_outside_each_voice_range():
    x = piece([84, 79], [73, 72], [48, 47], [40, 39])  # soprano too high once; alto, tenor, bass once each
    assert metrics.range_violations(x) == 3  # the soprano is given, not counted
    assert metrics.range_violations(x, voices=(0, 1, 2, 3)) == 4


def test_note_matches_compare_sounding_pitch_per_step():
    real = piece([72, None, None], [60, None, 62], [55, None, None], [48, None, None])
    gen = piece([72, None, None], [60, None, None], [55, 55, None], [48, None, "r"])
    # alto: 60, 60, 60 against 60, 60, 62 -> 2 of 3; tenor: a repeated note sounds the same -> 3 of 3;
    # bass: 2 of 3
    assert metrics.note_matches(gen, real) == (7, 9)


def test_score_is_per_100_beats_and_pools_pieces():
    # a parallel fifth (soprano-alto) and a bass D2 below the bass range; then a tenor G#3 outside C major
    fifth = piece([72, None, 74, None], [65, None, 67, None], [57, None, None, None], [38, None, None, None])
    plain = piece([72, None, None, None], [65, None, None, None], [56, None, None, None], [48, None, None, None])
    out = metrics.score([fifth, plain], steps_per_quarter=2, real=[fifth, plain], keys=[(0, False), (0, False)])
    assert out["parallel_fifths_per_100_beats"] == pytest.approx(100 * 1 / 4)  # 8 steps = 4 beats
    assert out["parallel_octaves_per_100_beats"] == 0
    assert out["range_violations_per_100_beats"] == pytest.approx(100 * 1 / 4)
    assert out["notes_per_beat"] == pytest.approx((4 + 3) / 4)
    assert out["in_key_ratio"] == pytest.approx(6 / 7)
    assert out["note_accuracy"] == 1.0
    wrong = metrics.score([plain], steps_per_quarter=2, real=[fifth])
    assert wrong["note_accuracy"] == pytest.approx(2 / 12)  # alto agrees on its first 2 steps, tenor and bass never


def test_unigram_fit_and_draws():
    x = piece([72, None, 74, "r"], [65, None, 67, "r"], [57, None, None, "r"], [41, None, None, "r"])
    probs = metrics.fit_unigram([x, x])
    assert probs.shape == (4, music.HIGH - music.LOW + 1)
    assert probs[1, 65 - music.LOW] == 0.5 and probs[1, 67 - music.LOW] == 0.5 and probs[2, 57 - music.LOW] == 1
    g = torch.Generator().manual_seed(0)
    out = metrics.unigram_harmony(x, probs, g)
    assert np.array_equal(out[0], x[0])  # the soprano is given
    for v in (1, 2, 3):  # the soprano's rhythm: notes at steps 0 and 2, a rest at 3
        assert [(a, b) for a, b, _ in music.notes(out[v])] == [(0, 2), (2, 3)] and out[v, 3] == R
    assert {m for _, _, m in music.notes(out[2])} == {57}
    draws = np.array([music.notes(metrics.unigram_harmony(x, probs, g)[1])[0][2] for _ in range(2000)])
    assert abs((draws == 65).mean() - 0.5) < 0.04 and set(draws) == {65, 67}
