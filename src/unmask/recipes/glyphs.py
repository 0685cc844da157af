"""Recipe `glyphs`: text to glyph. A prompt such as "LATIN SMALL LETTER A" (a character's Unicode name)
asks for a 32 x 32 grey render of that character; Meissonic-style masked generation of image tokens
with the prompt as word tokens and classifier-free guidance (Bai et al. 2024, arXiv:2410.08261;
`recipes/text_to_image.py` holds what it shares with `emoji`). Held out: renders in fonts the model
never saw, of characters it did see.

    unmask train glyphs --out runs/glyphs                  # tokenizer, then the model, then eval
    unmask sample runs/glyphs --prompt "GREEK SMALL LETTER ALPHA" --n 16
"""

from __future__ import annotations

from .text_to_image import TextToImage


class Glyphs(TextToImage):
    name = "glyphs"
    summary = "text to glyph: Unicode character names -> 32x32 renders, masked image tokens with guidance"
    data_name = "glyphs"
    channels = 1
