"""Bach chorales from music21's bundled corpus as four token streams: soprano, alto, tenor, bass.

Corpus: the chorales of `music21.corpus.chorales.Iterator()` (Riemenschneider numbering: 371 numbers,
350 distinct files, as some chorales appear twice in the collection) whose parts are exactly Soprano,
Alto, Tenor and Bass: 328 distinct chorales (348 numbers). music21 is the `music` extra and is
imported only when a score is read or written.

Grid: `steps_per_quarter` steps per quarter note, 2 (an eighth-note grid, the default) or 4 (a
sixteenth-note grid). Step k stands for the time k / steps_per_quarter and holds what sounds then:
- `HOLD` (id 0): the note sounding at step k - 1 goes on;
- `REST` (id 1): nothing sounds;
- a pitch id `2 + midi - LOW`, MIDI pitches LOW..HIGH (28..91, E1..G6): a note starts.
Tied notes are one note. A note that sounds only between grid times (a sixteenth passing note on the
eighth grid, a grace note) is dropped; a note starting between grid times starts at the next one. So
tokens -> score -> tokens is exact, and score -> tokens -> score is exact for scores on the grid.
A `HOLD` with nothing sounding before it (only generated tokens can hold one) reads as a rest.
The mask id is `MASK_ID = VOCAB_SIZE` (66).

Layout: `layout(T) = Layout.streams(4, T, name="voices")`, voice-major: the soprano's T steps, then
the alto's, the tenor's, the bass's (`tokens.reshape(4, T)` gives the voices back).

Split: a chorale is held out when the SHA-1 of its name falls in the lowest `TEST_SHARE` (10%) of the
hash range, so the split never depends on which other chorales exist. Training uses fixed-length
windows (`windows`), optionally in several transpositions (`transpose`); a note held over a window's
start is struck again at its first step, so every window decodes on its own.

Parsing all 328 chorales takes about 40 s, so `load_corpus(cache_dir)` keeps the token
arrays, names and keys in one `.npz` file there and reads that afterwards.

    >>> chorales = load_corpus("runs/cache")                       # doctest: +SKIP
    >>> train, test = split(chorales)                              # doctest: +SKIP
    >>> windows(train, length=16, hop=4, shifts=range(-6, 6)).shape  # doctest: +SKIP
    torch.Size([..., 64])
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import UnmaskError
from ..layout import Layout

VOICES = ("Soprano", "Alto", "Tenor", "Bass")
HOLD, REST, PITCH_OFFSET = 0, 1, 2
LOW, HIGH = 28, 91
VOCAB_SIZE = PITCH_OFFSET + HIGH - LOW + 1
MASK_ID = VOCAB_SIZE
GRIDS = (2, 4)
TEST_SHARE = 0.1
CACHE_VERSION = 2


def layout(steps: int) -> Layout:
    return Layout.streams(len(VOICES), steps, name="voices")


def music21():
    """The music21 module, or an UnmaskError naming the extra that provides it."""
    try:
        import music21 as m21
    except ImportError:
        raise UnmaskError("music data needs music21; install the music extra: pip install 'unmask[music]'") from None
    return m21


def _check_grid(steps_per_quarter: int) -> None:
    if steps_per_quarter not in GRIDS:
        raise ValueError(f"steps_per_quarter must be one of {GRIDS}, got {steps_per_quarter}")


def pitch_token(midi: int) -> int:
    if not LOW <= midi <= HIGH:
        raise ValueError(f"MIDI pitch {midi} lies outside the vocabulary's {LOW}..{HIGH}")
    return PITCH_OFFSET + midi - LOW


# tokens <-> notes ---------------------------------------------------------------------------------
def sounding(tokens: np.ndarray) -> np.ndarray:
    """The MIDI pitch sounding at every step, -1 where nothing sounds. tokens: int [..., T] -> int [..., T]."""
    tokens = np.asarray(tokens)
    out = np.where(tokens >= PITCH_OFFSET, tokens - PITCH_OFFSET + LOW, -1)
    for k in range(1, tokens.shape[-1]):
        held = tokens[..., k] == HOLD
        out[..., k] = np.where(held, out[..., k - 1], out[..., k])
    return out


def notes(line: np.ndarray) -> list[tuple[int, int, int]]:
    """The notes of one voice as (start step, end step exclusive, MIDI pitch). line: int [T]."""
    out: list[list[int]] = []
    current = None
    for k, t in enumerate(np.asarray(line).tolist()):
        if t >= PITCH_OFFSET:
            current = [k, k + 1, t - PITCH_OFFSET + LOW]
            out.append(current)
        elif t == HOLD and current is not None:
            current[1] = k + 1
        else:
            current = None
    return [tuple(n) for n in out]


def window(tokens: np.ndarray, start: int, length: int) -> np.ndarray:
    """Steps start..start+length of tokens [V, T], with a note held over `start` struck again there
    (and a dangling HOLD made a REST). Returns a new int64 array [V, length]."""
    if start < 0 or length < 1 or start + length > tokens.shape[-1]:
        raise ValueError(f"window {start}..{start + length} does not fit {tokens.shape[-1]} steps")
    out = np.array(tokens[:, start : start + length], dtype=np.int64)
    for v in np.nonzero(out[:, 0] == HOLD)[0]:
        k = start
        while k > 0 and tokens[v, k] == HOLD:
            k -= 1
        out[v, 0] = tokens[v, k] if tokens[v, k] >= PITCH_OFFSET else REST
    return out


def transpose(tokens: torch.Tensor, shift: int) -> torch.Tensor:
    """Every pitch token moved by `shift` semitones; HOLD and REST unchanged. Long[...] -> Long[...]."""
    pitched = tokens >= PITCH_OFFSET
    moved = torch.where(pitched, tokens + shift, tokens)
    if pitched.any() and (moved[pitched].min() < PITCH_OFFSET or moved[pitched].max() >= VOCAB_SIZE):
        raise ValueError(f"a transposition by {shift} leaves the pitch range {LOW}..{HIGH}")
    return moved


# scores <-> tokens (music21) ------------------------------------------------------------------------
def encode(score, steps_per_quarter: int = 2) -> np.ndarray:
    """A music21 score with four one-voice parts (in soprano, alto, tenor, bass order) -> int64 [4, T],
    T = the score's length in quarters times steps_per_quarter, rounded up."""
    _check_grid(steps_per_quarter)
    m21 = music21()
    parts = list(score.parts)
    if len(parts) != len(VOICES):
        raise ValueError(f"a chorale needs {len(VOICES)} parts, this score has {len(parts)}")
    lines = [part.stripTies().flatten().notesAndRests for part in parts]
    end = max((Fraction(e.offset) + Fraction(e.quarterLength) for line in lines for e in line), default=0)
    steps = math.ceil(end * steps_per_quarter)
    tokens = np.full((len(VOICES), steps), REST, dtype=np.int64)
    for v, line in enumerate(lines):
        for element in line:
            if isinstance(element, m21.chord.Chord):
                raise ValueError(f"part {v} holds a chord at offset {element.offset}; one voice per part is needed")
            if not element.isNote:
                continue
            onset = Fraction(element.offset) * steps_per_quarter
            first = math.ceil(onset)
            stop = math.ceil(onset + Fraction(element.quarterLength) * steps_per_quarter)
            if stop > first:  # a note between two grid times sounds at none of them
                tokens[v, first] = pitch_token(element.pitch.midi)
                tokens[v, first + 1 : stop] = HOLD
    return tokens


def decode(tokens: np.ndarray, steps_per_quarter: int = 2):
    """int [4, T] -> a music21 Score of four parts named Soprano, Alto, Tenor, Bass."""
    _check_grid(steps_per_quarter)
    m21 = music21()
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] != len(VOICES):
        raise ValueError(f"tokens must be [{len(VOICES)}, T], got {tokens.shape}")
    score = m21.stream.Score()
    for name, line in zip(VOICES, tokens, strict=True):
        part = m21.stream.Part()
        part.partName = part.id = name
        at = 0
        for start, end, midi in notes(line):
            if start > at:
                part.append(m21.note.Rest(quarterLength=Fraction(start - at, steps_per_quarter)))
            part.append(m21.note.Note(midi, quarterLength=Fraction(end - start, steps_per_quarter)))
            at = end
        if at < tokens.shape[1]:
            part.append(m21.note.Rest(quarterLength=Fraction(tokens.shape[1] - at, steps_per_quarter)))
        score.insert(0, part)
    return score


def write_midi(tokens: np.ndarray, path, steps_per_quarter: int = 2) -> Path:
    """Write tokens [4, T] as a four-track MIDI file through music21."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    decode(tokens, steps_per_quarter).write("midi", fp=str(path))
    return path


def read_midi(path, steps_per_quarter: int = 2, steps: int | None = None) -> np.ndarray:
    """A four-track MIDI file -> int64 [4, T]. MIDI keeps no trailing silence: `steps` pads it back."""
    tokens = encode(music21().converter.parse(str(path)), steps_per_quarter)
    if steps is not None and steps > tokens.shape[1]:
        tokens = np.pad(tokens, ((0, 0), (0, steps - tokens.shape[1])), constant_values=REST)
    return tokens


# the corpus ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chorale:
    name: str  # corpus path, e.g. 'bach/bwv66.6'
    tokens: np.ndarray  # int64 [4, T]
    tonic: int  # pitch class of the key music21's analysis finds (Krumhansl-Schmuckler)
    minor: bool


def is_satb(score) -> bool:
    return [p.partName for p in score.parts] == list(VOICES)


def load_chorale(name: str, steps_per_quarter: int = 2) -> Chorale:
    """Parse one bundled chorale, e.g. 'bach/bwv66.6'; an error if its parts are not S, A, T, B."""
    score = music21().corpus.parse(name)
    if not is_satb(score):
        raise ValueError(f"{name} has parts {[p.partName for p in score.parts]}, not {list(VOICES)}")
    key = score.analyze("key")
    return Chorale(name, encode(score, steps_per_quarter), int(key.tonic.pitchClass), key.mode == "minor")


def chorale_names() -> list[str]:
    """The distinct files of music21's Riemenschneider iterator, in its order (350 of its 371 numbers;
    not all are S, A, T, B)."""
    return list(dict.fromkeys(music21().corpus.chorales.Iterator(returnType="filename")))


def _cache_path(cache_dir: Path, names: list[str] | None, steps_per_quarter: int) -> Path:
    which = "all" if names is None else hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"chorales-v{CACHE_VERSION}-grid{steps_per_quarter}-{which}.npz"


def load_corpus(cache_dir=None, names: list[str] | None = None, steps_per_quarter: int = 2,
                progress: bool = False) -> list[Chorale]:
    """The S, A, T, B chorales among `names` (default: all of the corpus), read from the cache file
    in `cache_dir` when there is one, else parsed (and cached, when `cache_dir` is given)."""
    _check_grid(steps_per_quarter)
    path = _cache_path(cache_dir, names, steps_per_quarter) if cache_dir is not None else None
    if path is not None and path.exists():
        return _read_cache(path)
    music21()  # a missing extra is reported before any work
    todo = chorale_names() if names is None else list(names)
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="parse chorales", leave=False)
    chorales = []
    for name in todo:
        try:
            chorales.append(load_chorale(name, steps_per_quarter))
        except ValueError:
            if names is not None:
                raise
    if path is not None:
        _write_cache(path, chorales)
    return chorales


def _write_cache(path: Path, chorales: list[Chorale]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, tokens=np.concatenate([c.tokens for c in chorales], axis=1),
                 lengths=np.array([c.tokens.shape[1] for c in chorales]), names=np.array([c.name for c in chorales]),
                 tonic=np.array([c.tonic for c in chorales]), minor=np.array([c.minor for c in chorales]))
    os.replace(tmp, path)


def _read_cache(path: Path) -> list[Chorale]:
    with np.load(path, allow_pickle=False) as f:
        cuts = np.cumsum(f["lengths"])[:-1]
        parts = np.split(f["tokens"], cuts, axis=1)
        return [Chorale(str(n), t, int(k), bool(m))
                for n, t, k, m in zip(f["names"], parts, f["tonic"], f["minor"], strict=True)]


def is_held_out(name: str, test_share: float = TEST_SHARE) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) < test_share * 2**32


def split(chorales: list[Chorale], test_share: float = TEST_SHARE) -> tuple[list[Chorale], list[Chorale]]:
    """(train, test) by the hash of each chorale's name."""
    test = [c for c in chorales if is_held_out(c.name, test_share)]
    return [c for c in chorales if not is_held_out(c.name, test_share)], test


def windows(chorales: list[Chorale], length: int, hop: int, shifts=(0,)) -> torch.Tensor:
    """Every window of `length` steps starting at 0, hop, 2 hop, ... (and one ending at each chorale's
    end), in each transposition of `shifts`: Long[len(shifts) * M, 4 * length], grouped by shift."""
    if length < 1 or hop < 1:
        raise ValueError(f"length and hop must be >= 1, got {length} and {hop}")
    out = []
    for c in chorales:
        steps = c.tokens.shape[1]
        if steps < length:
            continue
        starts = sorted(set(range(0, steps - length + 1, hop)) | {steps - length})
        out += [window(c.tokens, s, length).reshape(-1) for s in starts]
    if not out:
        raise ValueError(f"no chorale is {length} steps long")
    base = torch.from_numpy(np.stack(out))
    return torch.cat([transpose(base, s) for s in shifts])
