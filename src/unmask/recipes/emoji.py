"""Recipe `emoji`: text to emoji. A prompt such as "grinning face" (the emoji's CLDR name) asks for a
32 x 32 RGB Twemoji image; Meissonic-style masked generation of image tokens with the prompt as word
tokens and classifier-free guidance (Bai et al. 2024, arXiv:2410.08261; `recipes/text_to_image.py`
holds what it shares with `glyphs`). Every emoji is its own class, so the held-out emoji have
prompts never trained on: the evaluation asks for train-split prompts and says so.

    unmask train emoji --out runs/emoji
    unmask sample runs/emoji --prompt "grinning face" --n 16
"""

from __future__ import annotations

from .text_to_image import TextToImage


class Emoji(TextToImage):
    name = "emoji"
    summary = "text to emoji: CLDR emoji names -> 32x32 RGB images, masked image tokens with guidance"
    data_name = "emoji"
    channels = 3
