"""Image-caption batches of `unmask.data.image_text` as the image-text benchmarks train on them:
images scaled to [0, 1], captions as word ids under the training captions' vocabulary."""

from __future__ import annotations

from unmask.data.image_text import ImageText, Vocab, load


def captioned(name: str, split: str, vocab: Vocab | None = None, length: int | None = None,
              **load_options) -> tuple[dict, ImageText, Vocab, int]:
    """({"images": Float[M, C, S, S] in [0, 1], "tokens": Long[M, T], "lengths": Long[M]}, the set, vocab, T).

    Build the vocabulary and the caption length T on the training split and pass both for the test split.
    """
    s = load(name, split, **load_options)
    vocab = vocab or Vocab.build(s.captions)
    length = length or max(len(c.split()) for c in s.captions)
    tokens, lengths = vocab.encode(s.captions, length)
    return {"images": s.images.float() / 255.0, "tokens": tokens, "lengths": lengths}, s, vocab, length
