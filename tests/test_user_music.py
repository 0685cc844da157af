"""Users' own four-part music as `data.source` of `chorales`: MIDI and MusicXML files written here with
music21 from known tokens come back as exactly those tokens, voice by voice; files of the wrong kind
are counted skips in RUN/data.json; data that cannot be used is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY

pytest.importorskip("music21")

from unmask.data import music  # noqa: E402
from unmask.data.user_music import read_music  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

H = music.HOLD
STEPS, WINDOW = 24, 16  # TINY keeps the recipe's window of 16 steps


def piece(seed, steps=STEPS):
    """Tokens [4, steps]: each voice in its own register (soprano highest), a note every two steps."""
    rng = np.random.default_rng(seed)
    tokens = np.full((4, steps), H)
    for v, low in enumerate((67, 60, 53, 43)):
        tokens[v, ::2] = [music.pitch_token(low + int(x)) for x in rng.integers(0, 7, steps // 2)]
    tokens[3, 4:8] = [music.pitch_token(40), H, H, H]  # a longer note, so a HOLD run is read too
    return tokens


def make_folder(root):
    """Three MIDI files, one MusicXML file of five parts (the first four kept), and one each of: three
    parts, a chord, too short, not music. Returns {relative path: tokens it must read back as}."""
    from music21 import chord

    root.mkdir()
    truth = {f"midi/p{i}.mid": piece(i) for i in range(3)}
    for name, tokens in truth.items():
        music.write_midi(tokens, root / name)
    five = music.decode(piece(7))
    five.insert(0, music.decode(piece(8)).parts[0])  # a fifth part, last
    five.write("musicxml", fp=str(root / "five.musicxml"))
    truth["five.musicxml"] = piece(7)
    three = music.decode(piece(9))
    three.remove(three.parts[3])
    three.write("musicxml", fp=str(root / "three.musicxml"))
    chords = music.decode(piece(10))
    chords.parts[1].insert(0, chord.Chord(["C4", "E4"], quarterLength=1))
    chords.write("musicxml", fp=str(root / "chords.xml"))
    music.write_midi(piece(11, steps=WINDOW - 4), root / "short.mid")
    (root / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06 this is not a MIDI file")
    (root / "notes.txt").write_text("not music, and not named as music")
    return truth


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("music") / "pieces"
    return root, make_folder(root)


def test_pieces_read_back_as_the_tokens_they_were_written_from(folder):
    root, truth = folder
    read = read_music(root, steps_per_quarter=2, min_steps=WINDOW)
    assert sorted(p.name for p in read.pieces) == sorted(truth)
    for p in read.pieces:
        assert np.array_equal(p.tokens, truth[p.name]), p.name  # soprano first: parts not swapped
    assert read.kept_first_four_parts == 1
    assert dict(read.stats.skips.counts) == {"fewer than 4 parts": 1, "a part plays chords": 1,
                                             f"shorter than {WINDOW} steps": 1, "music21 cannot parse it": 1}
    train, test = read.split()
    assert len(test) >= 1 and len(train) >= 1 and len(train) + len(test) == 4
    again = read_music(root, steps_per_quarter=2, min_steps=WINDOW)
    assert again.held_out.tolist() == read.held_out.tolist()


def test_chorales_train_on_a_folder_and_say_what_was_read(folder, tmp_path, cli):
    root, _ = folder
    out = tmp_path / "run"
    ran = cli("train", "chorales", "--out", out, "--no-progress", *TINY["chorales"], f"data.source={root}")
    assert ran.code == 0, ran.err
    data = json.loads((out / "data.json").read_text())
    assert (data["files"], data["examples"], data["skipped"]) == (8, 4, 4)
    assert {r: v["count"] for r, v in data["skipped_by_reason"].items()} == {
        "fewer than 4 parts": 1, "a part plays chords": 1, f"shorter than {WINDOW} steps": 1,
        "music21 cannot parse it": 1}
    assert data["skipped_by_reason"]["music21 cannot parse it"]["examples"] == [str(root / "broken.mid")]
    assert data["kept_first_four_parts"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out_chorales"] == data["held_out"] >= 1 and metrics["given_soprano_unchanged"] == 1.0
    report = (out / "report.md").read_text()
    assert "Data: 4 examples from 8 files" in report and "held-out pieces" in report


def refused(cli, tmp_path, *overrides):
    ran = cli("train", "chorales", "--out", tmp_path / "never", "--no-progress", *TINY["chorales"], *overrides)
    assert ran.code == 2, ran
    assert ran.err.startswith("unmask: error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err


def test_music_that_cannot_be_used_is_refused_in_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    assert "no data files" in refused(cli, tmp_path, f"data.source={tmp_path / 'empty'}")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.mid").write_bytes(b"nothing")
    music.write_midi(piece(1), tmp_path / "junk" / "b.mid")
    err = refused(cli, tmp_path, f"data.source={tmp_path / 'junk'}")
    assert "1 of the 2 files" in err and "at least 2" in err and "music21 cannot parse it: 1" in err
