"""aeon's bundled .ts files read without aeon: the real counts, padding, labels, and the parser's rules."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from unmask.data.timeseries import load_ts, parse_ts
from unmask.errors import UnmaskError

if importlib.util.find_spec("aeon") is None:  # not importorskip: importing aeon is what the module avoids
    pytest.skip("aeon's files ship with aeon (the audio extra)", allow_module_level=True)


TEXT = """#comment
@problemName Toy
@classLabel true b a
@data
1,2,3:4,5,6:a
7:8:b
"""


def test_parse_pads_and_keeps_class_order():
    s = parse_ts(TEXT)
    assert s.classes == ("b", "a")
    assert s.labels.tolist() == [1, 0] and s.lengths.tolist() == [3, 1]
    assert torch.equal(s.x, torch.tensor([[[1.0, 2, 3], [4, 5, 6]], [[7, 0, 0], [8, 0, 0]]]))


def test_parse_errors():
    with pytest.raises(UnmaskError, match="classes"):
        parse_ts(TEXT.replace("1,2,3:4,5,6:a", "1:2:c"))
    with pytest.raises(UnmaskError, match="classLabel"):
        parse_ts("@data\n1:2:a\n")
    with pytest.raises(UnmaskError, match="one of"):
        load_ts("GunPointy", "train")
    with pytest.raises(UnmaskError, match="split"):
        load_ts("BasicMotions", "valid")


def test_japanese_vowels():
    train, test = load_ts("JapaneseVowels", "train"), load_ts("JapaneseVowels", "test")
    assert train.classes == tuple(str(k) for k in range(1, 10))
    assert train.x.shape[:2] == (270, 12) and test.x.shape[:2] == (370, 12)
    assert torch.bincount(train.labels).tolist() == [30] * 9
    assert torch.bincount(test.labels).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    for s in (train, test):
        assert s.lengths.min() == 7 and s.lengths.max() <= 29 and s.x.shape[2] == s.lengths.max()
        steps = torch.arange(s.x.shape[2])
        assert s.x[:, :, steps >= s.lengths.min()].abs().sum() > 0
        padding = steps[None, None, :] >= s.lengths[:, None, None]
        assert torch.all(s.x.masked_select(padding.expand_as(s.x)) == 0)
    # the first training series' first value, read off the file
    assert train.x[0, 0, 0] == pytest.approx(1.860936)


def test_basic_motions():
    for split in ("train", "test"):
        s = load_ts("BasicMotions", split)
        assert s.x.shape == (40, 6, 100) and s.classes == ("Standing", "Running", "Walking", "Badminton")
        assert torch.bincount(s.labels).tolist() == [10] * 4 and torch.all(s.lengths == 100)


def test_reading_does_not_import_aeon():
    if "aeon" in sys.modules:
        pytest.skip("aeon was imported by another test")
    load_ts.cache_clear()
    load_ts("BasicMotions", "train")
    assert "aeon" not in sys.modules
