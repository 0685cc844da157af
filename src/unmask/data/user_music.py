"""A user's own four-part music (the `chorales` recipe's `data.source`): a folder (or a glob, or one
file) of MIDI (`.mid`, `.midi`) or MusicXML (`.musicxml`, `.xml`, `.mxl`) files, read with music21
and encoded exactly as the Bach chorales are (`music.encode`: four streams on a grid of
`steps_per_quarter` steps, HOLD / REST / pitch tokens).

Parts: the first four parts of a file, in its order (a score's staves top to bottom, a MIDI file's
tracks first to last), are read as soprano, alto, tenor and bass. A file with more than four parts
keeps its first four (counted in `RUN/data.json` as `kept_first_four_parts`); one with fewer is a
counted skip. So is a file music21 cannot parse, one with no notes, a part that plays chords (one
voice per part is needed) or unpitched notes (drums), a pitch outside the vocabulary's E1..G6 (MIDI
28..91), and a piece shorter than `min_steps` (the recipe's window: there would be no window to
train on or to harmonise). Silence after the last note is dropped first (a MIDI file keeps none,
and music21 fills a score's last bar with rests), so a piece's length is where its music ends. The
key (for the in-key metric) is music21's analysis of the four parts, as for the chorales.

Held out: by the hash of the file's path relative to the folder (`user_images.hash_split`, the
chorales' own rule and share, with at least one piece on each side).

    music = read_music("my_quartets/", steps_per_quarter=2, min_steps=16)
    train, test = music.split()       # lists of `music.Chorale`, named by relative path
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UnmaskError
from . import music
from .source import DataStats, Skips, expand
from .user_images import hash_split

SUFFIXES = (".mid", ".midi", ".musicxml", ".xml", ".mxl")


class Skip(Exception):
    """One file left out, for the reason given (a key of `Skips`)."""


@dataclass(frozen=True)
class UserMusic:
    pieces: tuple[music.Chorale, ...]   # named by path relative to the folder
    held_out: torch.Tensor              # Bool[M]
    stats: DataStats
    kept_first_four_parts: int = 0      # files of more than four parts

    def split(self) -> tuple[list[music.Chorale], list[music.Chorale]]:
        """(train, test): the pieces not held out and those held out."""
        flags = self.held_out.tolist()
        return ([p for p, h in zip(self.pieces, flags, strict=True) if not h],
                [p for p, h in zip(self.pieces, flags, strict=True) if h])

    def to_dict(self) -> dict:
        """What `RUN/data.json` records: the `DataStats`, the split and the files cut to four parts."""
        return {**self.stats.to_dict(), "held_out": int(self.held_out.sum()),
                "kept_first_four_parts": self.kept_first_four_parts}


def piece(path: Path, name: str, steps_per_quarter: int, min_steps: int) -> tuple[music.Chorale, bool]:
    """One file -> (the `Chorale` of its first four parts, whether it had more), or `Skip`."""
    m21 = music.music21()
    try:
        score = m21.converter.parse(str(path))
    except Exception:  # music21 raises many kinds (its own, XML, MIDI, index errors) on a bad file
        raise Skip("music21 cannot parse it") from None
    parts = list(getattr(score, "parts", ()))
    if len(parts) < len(music.VOICES):
        raise Skip(f"fewer than {len(music.VOICES)} parts")
    for extra in parts[len(music.VOICES):]:
        score.remove(extra)
    notes = [n for p in parts[: len(music.VOICES)] for n in p.recurse().notes]
    if not notes:
        raise Skip("no notes")
    if any(n.isChord for n in notes):
        raise Skip("a part plays chords")
    if not all(hasattr(n, "pitch") for n in notes):
        raise Skip("unpitched notes")
    if not all(music.LOW <= n.pitch.midi <= music.HIGH for n in notes):
        raise Skip("a pitch outside E1..G6")
    tokens = music.encode(score, steps_per_quarter)
    sounding = np.nonzero((tokens != music.REST).any(0))[0]
    tokens = tokens[:, : sounding[-1] + 1] if len(sounding) else tokens[:, :0]
    if tokens.shape[1] < min_steps:
        raise Skip(f"shorter than {min_steps} steps")
    key = score.analyze("key")
    chorale = music.Chorale(name, tokens, int(key.tonic.pitchClass), key.mode == "minor")
    return chorale, len(parts) > len(music.VOICES)


def read_music(source, *, steps_per_quarter: int = 2, min_steps: int = 1,
               test_share: float = music.TEST_SHARE) -> UserMusic:
    """The usable pieces of `source` (see the module docstring); none usable is an `UnmaskError`."""
    music.music21()  # a missing extra is reported before any work
    files = expand(source, SUFFIXES)
    root = Path(str(source)).expanduser()
    root = root if root.is_dir() else None
    skips, pieces, cut = Skips(), [], 0
    for f in files:
        name = (f.relative_to(root) if root is not None else f).as_posix()
        try:
            chorale, more = piece(f, name, steps_per_quarter, min_steps)
        except Skip as why:
            skips.add(f, str(why))
            continue
        pieces.append(chorale)
        cut += more
    if len(pieces) < 2:
        reasons = "; ".join(f"{r}: {n}" for r, n in skips.counts.items())
        raise UnmaskError(f"{len(pieces)} of the {len(files)} files of {source} can be used; at least 2 are needed "
                          f"(one to train on, one held out){f' ({reasons})' if reasons else ''}")
    held_out = hash_split([p.name for p in pieces], test_share)
    return UserMusic(tuple(pieces), held_out, DataStats(str(source), len(files), len(pieces), skips), cut)
