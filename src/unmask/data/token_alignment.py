"""Alignment of a byte-level BPE token sequence with the UTF-8 bytes of the same text, for models that
read the same text in two tokenisations that do not align (HAD, P35: a BPE teacher, a byte student).

Each BPE token is one *group*: the bytes it covers. A byte-level BPE (`data/code.py`) writes every
token as characters of the GPT-2 byte alphabet (`bytes_to_unicode`), one character per byte, so the
token's bytes are read back exactly, also where a token holds part of a multi-byte character; the
tokens' bytes, concatenated, are the text's UTF-8 bytes, and every byte lies in exactly one group.
Hugging Face `tokenizers` reports offsets in characters instead: tokens that split one character
share that character's offsets (`byte_spans` turns them into byte offsets).

Byte ids are 0..255; padding, after a chunk's last byte, is `BYTE_PAD` = 256 with group -1.

    >>> table = TokenBytes.of(corpus.tokenizer)                      # doctest: +SKIP
    >>> chunks = table.chunks(corpus.train.tokens, length=144)        # doctest: +SKIP
    >>> chunks.bytes.shape, chunks.groups.shape, chunks.fits.shape    # doctest: +SKIP
    (torch.Size([M, 144]), torch.Size([M, 144]), torch.Size([M]))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

BYTE_PAD = 256  # the padding byte's id
BYTE_VOCAB = 257  # 256 bytes and the padding byte


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[str, int]:
    """The GPT-2 byte alphabet read backwards: character -> byte. Printable Latin-1 bytes stand for
    themselves; the other 68 bytes are written as the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {chr(b): b for b in printable}, 0
    for b in range(256):
        if b not in printable:
            out[chr(256 + extra)] = b
            extra += 1
    return out


def piece_bytes(piece: str) -> bytes:
    """A byte-level token's string (`id_to_token`) -> its bytes."""
    alphabet = byte_alphabet()
    try:
        return bytes(alphabet[c] for c in piece)
    except KeyError as e:
        raise ValueError(f"token {piece!r} holds {e.args[0]!r}, not a character of the byte-level alphabet; "
                         "is the tokenizer byte-level?") from None


def byte_spans(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character offsets (what `tokenizers` reports) -> byte offsets in `text.encode('utf-8')`."""
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [(starts[a], starts[b]) for a, b in offsets]


@dataclass(frozen=True)
class ByteAlignment:
    """One text: its bytes and, per byte, the BPE token (group) that covers it."""
    bytes: torch.Tensor  # Long[Nb], 0..255
    group: torch.Tensor  # Long[Nb], the token index of each byte, non-decreasing
    starts: torch.Tensor  # Long[T], each token's first byte
    lengths: torch.Tensor  # Long[T], each token's byte count (>= 1)


@dataclass(frozen=True)
class ByteChunks:
    """Chunks of BPE tokens as padded byte rows."""
    bytes: torch.Tensor  # Long[M, N]: bytes, BYTE_PAD after the chunk's end
    groups: torch.Tensor  # Long[M, N]: the token index in the chunk (0..L-1), -1 at padding
    fits: torch.Tensor  # Bool[M]: the chunk's bytes fit in N (rows that do not are cut at N)


@dataclass(frozen=True)
class TokenBytes:
    """Every token id's bytes, flat: token v is `flat[start[v] : start[v] + length[v]]`."""
    flat: torch.Tensor  # Long[total]
    start: torch.Tensor  # Long[V]
    length: torch.Tensor  # Long[V]

    @staticmethod
    def of(tokenizer) -> TokenBytes:
        """From a `CodeTokenizer` (or a `tokenizers.Tokenizer`). Special tokens are read as their text,
        as `decode` writes them. A token of no bytes is an error: it would be an empty group."""
        tk = getattr(tokenizer, "tokenizer", tokenizer)
        pieces = [piece_bytes(tk.id_to_token(v)) for v in range(tk.get_vocab_size())]
        empty = [v for v, p in enumerate(pieces) if not p]
        if empty:
            raise ValueError(f"tokens {empty[:5]} have no bytes; every group needs one")
        length = torch.tensor([len(p) for p in pieces])
        start = torch.cumsum(length, 0) - length
        return TokenBytes(torch.tensor(list(b"".join(pieces))), start, length)

    def align(self, ids) -> ByteAlignment:
        """ids: a token sequence (Long[T] or a list) -> its `ByteAlignment`."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.ndim != 1:
            raise ValueError(f"align takes one sequence, Long[T]; got shape {tuple(ids.shape)}")
        self._check(ids)
        lengths = self.length[ids]  # [T]
        group = torch.repeat_interleave(torch.arange(len(ids)), lengths)  # [Nb]
        starts = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(len(group)) - starts[group]
        return ByteAlignment(self.flat[self.start[ids][group] + within], group, starts, lengths)

    def chunks(self, tokens: torch.Tensor, length: int) -> ByteChunks:
        """tokens: Long[M, L] -> their bytes in rows of `length`, padded (or cut) there."""
        if tokens.ndim != 2 or length < 1:
            raise ValueError(f"chunks takes Long[M, L] and length >= 1; got {tuple(tokens.shape)}, {length}")
        self._check(tokens)
        m, l = tokens.shape
        lengths = self.length[tokens].reshape(-1)  # [M*L]
        token = torch.repeat_interleave(torch.arange(m * l), lengths)  # [total]: flat token of each byte
        first = torch.cumsum(lengths, 0) - lengths  # [M*L]: each token's first byte, flat
        row = token // l
        row_first = first.view(m, l)[:, 0]  # [M]
        pos = torch.arange(len(token)) - row_first[row]  # place in its row
        value = self.flat[self.start[tokens.reshape(-1)][token] + torch.arange(len(token)) - first[token]]
        keep = pos < length
        out = torch.full((m, length), BYTE_PAD, dtype=torch.long)
        groups = torch.full((m, length), -1, dtype=torch.long)
        out[row[keep], pos[keep]] = value[keep]
        groups[row[keep], pos[keep]] = (token % l)[keep]
        fits = self.length[tokens].sum(1) <= length
        return ByteChunks(out, groups, fits)

    def _check(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.length)):
            raise ValueError(f"token ids must lie in [0, {len(self.length)}), got {int(ids.min())}..{int(ids.max())}")


def align_text(tokenizer, text: str) -> tuple[ByteAlignment, list[tuple[int, int]]]:
    """Encode `text` and align it: (alignment, the tokenizer's character offsets). The bytes are
    checked against `text.encode('utf-8')` (a tokenizer that is not lossless is an error)."""
    tk = getattr(tokenizer, "tokenizer", tokenizer)
    enc = tk.encode(text)
    alignment = TokenBytes.of(tk).align(enc.ids)
    if bytes(alignment.bytes.tolist()) != text.encode("utf-8"):
        raise ValueError("the tokens' bytes are not the text's UTF-8 bytes: the tokenizer is not byte-level lossless")
    return alignment, list(enc.offsets)
