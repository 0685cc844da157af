"""Metrics of four-voice chorales on the token grid of `data.music`, and the unigram baseline.

For the generated voices (`voices`, e.g. alto, tenor and bass when the soprano is given) of pieces
int [4, T], summed over pieces before dividing:
- `note_accuracy`: share of the voices' grid steps whose sounding pitch (or silence) is the real
  chorale's;
- `in_key_ratio`: share of the voices' notes whose pitch class lies in the chorale's key: the major
  scale, or in minor the natural minor with the raised sixth and seventh (harmonic and melodic minor
  together, 9 pitch classes), since a minor-mode leading tone belongs to the key;
- `range_violations_per_100_beats`: the voices' notes outside the textbook ranges `RANGES`
  (soprano C4-G5, alto G3-C5, tenor C3-G4, bass E2-C4);
- `parallel_fifths_per_100_beats`, `parallel_octaves_per_100_beats` (unisons count as octaves): over
  every pair of voices with at least one generated voice, two successive events of the pair (a time
  where either voice starts a note or is silent, so a rest breaks the succession), both voices
  sounding at both, both moving in the same direction, a perfect fifth (|interval| mod 12 = 7) or
  octave (= 0) at both;
- `notes_per_beat` of the voices (a model that held every note would make no parallels).
A beat is a quarter note. The unigram baseline fills each voice with pitches drawn independently
from that voice's note pitches in the training chorales, one note at each onset of the soprano.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import music
from ..sampling import categorical

RANGES = ((60, 79), (55, 72), (48, 67), (40, 60))  # soprano, alto, tenor, bass; MIDI, inclusive
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 9, 10, 11)
GENERATED = (1, 2, 3)  # harmonisation: alto, tenor, bass


def key_pitch_classes(tonic: int, minor: bool) -> set[int]:
    return {(tonic + d) % 12 for d in (MINOR if minor else MAJOR)}


def note_matches(generated: np.ndarray, real: np.ndarray, voices=GENERATED) -> tuple[int, int]:
    """(steps whose sounding pitch agrees, steps) over `voices` of two int [4, T] pieces."""
    if generated.shape != real.shape:
        raise ValueError(f"pieces differ in shape: {generated.shape} and {real.shape}")
    a, b = music.sounding(generated[list(voices)]), music.sounding(real[list(voices)])
    return int((a == b).sum()), int(a.size)


def in_key(tokens: np.ndarray, tonic: int, minor: bool, voices=GENERATED) -> tuple[int, int]:
    """(notes in the key, notes) over `voices` of tokens [4, T]."""
    scale = key_pitch_classes(tonic, minor)
    pitches = [p for v in voices for _, _, p in music.notes(tokens[v])]
    return sum(p % 12 in scale for p in pitches), len(pitches)


def range_violations(tokens: np.ndarray, voices=GENERATED) -> int:
    """Notes of `voices` of tokens [4, T] outside their voice's range in `RANGES`."""
    return sum(not RANGES[v][0] <= p <= RANGES[v][1] for v in voices for _, _, p in music.notes(tokens[v]))


def parallels(tokens: np.ndarray, voices=GENERATED) -> tuple[int, int]:
    """(parallel fifths, parallel octaves) of tokens [4, T] over the voice pairs touching `voices`."""
    tokens = np.asarray(tokens)
    pitch = music.sounding(tokens)  # [4, T], -1 silent
    event = tokens != music.HOLD
    fifths = octaves = 0
    for i in range(len(tokens)):
        for j in range(i + 1, len(tokens)):
            if i not in voices and j not in voices:
                continue
            times = np.nonzero(event[i] | event[j])[0]
            for t1, t2 in zip(times[:-1], times[1:], strict=True):
                a, b, c, d = pitch[i, t1], pitch[j, t1], pitch[i, t2], pitch[j, t2]
                if min(a, b, c, d) < 0 or a == c or b == d or (c > a) != (d > b):
                    continue
                first, second = abs(int(a) - int(b)) % 12, abs(int(c) - int(d)) % 12
                fifths += first == second == 7
                octaves += first == second == 0
    return fifths, octaves


def score(pieces: list[np.ndarray], *, steps_per_quarter: int, real: list[np.ndarray] | None = None,
          keys: list[tuple[int, bool]] | None = None, voices=GENERATED) -> dict[str, float]:
    """Every metric of the module docstring over `pieces` (int [4, T] each); `note_accuracy` needs
    the `real` pieces, `in_key_ratio` their `keys` as (tonic pitch class, minor)."""
    if not pieces:
        raise ValueError("no pieces to score")
    beats = sum(p.shape[1] for p in pieces) / steps_per_quarter
    n_notes = sum(len(music.notes(p[v])) for p in pieces for v in voices)
    fifths, octaves = np.sum([parallels(p, voices) for p in pieces], axis=0)
    out = {
        "range_violations_per_100_beats": 100 * sum(range_violations(p, voices) for p in pieces) / beats,
        "parallel_fifths_per_100_beats": 100 * float(fifths) / beats,
        "parallel_octaves_per_100_beats": 100 * float(octaves) / beats,
        "notes_per_beat": n_notes / beats,
    }
    if keys is not None:
        hits, total = np.sum([in_key(p, t, m, voices) for p, (t, m) in zip(pieces, keys, strict=True)], axis=0)
        out["in_key_ratio"] = float(hits) / max(int(total), 1)
    if real is not None:
        hits, total = np.sum([note_matches(p, r, voices) for p, r in zip(pieces, real, strict=True)], axis=0)
        out["note_accuracy"] = float(hits) / max(int(total), 1)
    return out


def fit_unigram(pieces: list[np.ndarray]) -> np.ndarray:
    """Float64 [4, P]: each voice's distribution of note pitches (P = the vocabulary's pitches)."""
    counts = np.zeros((len(music.VOICES), music.HIGH - music.LOW + 1))
    for p in pieces:
        for v in range(len(music.VOICES)):
            for _, _, midi in music.notes(p[v]):
                counts[v, midi - music.LOW] += 1
    return counts / counts.sum(1, keepdims=True).clip(min=1)


def unigram_harmony(tokens: np.ndarray, probs: np.ndarray, generator: torch.Generator | None = None,
                    voices=GENERATED, rhythm: int = 0) -> np.ndarray:
    """tokens [4, T] with `voices` replaced: a note at each onset of voice `rhythm`, held while it
    holds, silent while it rests; pitches drawn independently from `probs` [4, P]."""
    out = np.array(tokens, dtype=np.int64)
    guide = out[rhythm]
    starts = np.nonzero(guide >= music.PITCH_OFFSET)[0]
    logp = torch.from_numpy(probs).log()  # [4, P], -inf for pitches a voice never sings
    for v in voices:
        drawn = categorical(logp[v].expand(len(starts), -1), 1.0, generator).numpy()  # [n]
        out[v] = np.where(guide == music.HOLD, music.HOLD, music.REST)
        out[v, starts] = drawn + music.PITCH_OFFSET
    return out
