"""Image-text pairs: captions line up with their images on known keys, the splits follow the image
sets' held-out rules, and the vocabulary's ids follow the project's conventions."""

import torch

from unmask.data import image_sets, video
from unmask.data.image_text import DIRECTION_WORDS, Vocab, caption_of_clip, load


def _either(name, key):
    for split in ("train", "test"):
        s = load(name, split)
        if key in s.keys:
            return s, s.keys.index(key)
    raise AssertionError(f"{key} in neither split")


def test_glyph_captions_are_unicode_names_of_the_drawn_character():
    for ch, name in (("\u03b1", "greek small letter alpha"), ("A", "latin capital letter a"), ("7", "digit seven")):
        key = image_sets.glyph_key("DejaVuSans.ttf", ch)
        s, i = _either("glyphs", key)
        assert s.captions[i] == name
        drawn = torch.from_numpy(image_sets.render_glyph("DejaVuSans.ttf", ch, 32).copy())
        assert torch.equal(s.images[i, 0], drawn)


def test_emoji_caption_is_its_name():
    s, i = _either("emoji", "1f600")
    assert s.captions[i] == "grinning face"
    assert s.images.shape[1:] == (3, 32, 32)


def test_moving_digit_captions_follow_the_clip():
    s = load("moving_digits", "test")
    clips = video.moving_digits("test", frames=4, seed=1)  # the test clips use seed + 1
    for i in (0, 5, 123):
        d, r = int(clips.digit[i, 0]), int(clips.direction[i, 0])
        assert s.captions[i] == f"a {d} moving {DIRECTION_WORDS[r]}" == caption_of_clip(d, r)
        assert torch.equal(s.images[i], (clips.videos[i, 0] * 255).round().to(torch.uint8))
    assert caption_of_clip(3, 4) == "a 3 moving left"


def test_splits_follow_the_image_sets_rules():
    train, test = load("glyphs", "train"), load("glyphs", "test")
    assert set(train.keys).isdisjoint(test.keys)
    assert set(train.captions) == set(test.captions)  # every character on both sides
    assert train.keys == image_sets.load("glyphs", "train").keys
    assert len(load("moving_digits", "test")) == 360  # the held-out digits


def test_vocab_ids_padding_and_mask():
    v = Vocab.build(["a 3 moving left", "a 4 moving up left"])
    assert v.words[:2] == ("[pad]", "[unk]") and v.pad_id == 0 and v.mask_id == v.size == 8
    tokens, lengths = v.encode(["a 3 moving left", "a 9 moving up left now"], 5)
    assert lengths.tolist() == [4, 5]
    assert tokens[0, 4] == v.pad_id
    assert tokens[1, 1] == 1  # "9" was never seen: unk
    assert v.decode(tokens[0]) == "a 3 moving left"
