"""Index form of a mask for drop-hidden networks (MAE, He et al. 2022): only the visible tokens are
gathered into a dense `[B, K, D]` tensor, and `ids_restore` puts them back in place.

MAE shuffles by an argsort of noise; here the shuffle comes from any masker's Bool mask instead: a
stable argsort of the mask puts the K visible tokens first (in their own order) and the hidden ones
after, so `ids_shuffle` is a permutation whose first K entries are exactly the visible places, and
`ids_restore = argsort(ids_shuffle)` is its inverse. Every row must hide the same number of tokens,
which the project's exact-count maskers guarantee.

The index's shape depends on the mask's counts, so building it reads the mask. Give it the mask the
masker drew, which lives in host memory: reading it there waits for nothing, and the index then
moves to the device without a wait (`VisibleIndex.to`). A mask already on a GPU would be read there,
which waits for every queued kernel (STYLE habit 11). `same_count_rows` and `padded_rows` do the
same for the masked token models, which compute their last block only at the hidden places.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class VisibleIndex(NamedTuple):
    ids_shuffle: torch.Tensor  # Long[B, L]: visible places first, then hidden
    ids_restore: torch.Tensor  # Long[B, L]: inverse permutation of ids_shuffle
    keep: int  # K, visible tokens per row

    @property
    def ids_keep(self) -> torch.Tensor:
        """Long[B, K]: the visible places, ascending."""
        return self.ids_shuffle[:, : self.keep]

    @property
    def ids_hidden(self) -> torch.Tensor:
        """Long[B, L - K]: the hidden places, ascending."""
        return self.ids_shuffle[:, self.keep :]

    @property
    def mask(self) -> torch.Tensor:
        """Bool[B, L], True = hidden: the mask this index was made from."""
        b, n = self.ids_shuffle.shape
        shuffled = torch.arange(n, device=self.ids_shuffle.device).expand(b, n) >= self.keep
        return shuffled.gather(1, self.ids_restore)

    def to(self, device) -> VisibleIndex:
        """The index on `device`; from host memory the copy does not wait for the device."""
        return VisibleIndex(self.ids_shuffle.to(device, non_blocking=True),
                            self.ids_restore.to(device, non_blocking=True), self.keep)


def split_visible(mask: torch.Tensor) -> VisibleIndex:
    """mask: Bool[B, L], True = hidden, the same count in every row -> VisibleIndex, on the mask's
    device (pass the host mask, see above)."""
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"mask must be Bool[B, L], got {mask.dtype} of shape {tuple(mask.shape)}")
    hidden = mask.sum(1)
    if hidden.numel() and not (hidden == hidden[0]).all():
        raise ValueError(f"a drop-hidden network needs the same hidden count in every row, got "
                         f"{sorted(set(hidden.tolist()))}; use an exact-count masker")
    b, n = mask.shape
    keep = n - (int(hidden[0]) if hidden.numel() else 0)
    ids_shuffle = mask.to(torch.uint8).argsort(dim=1, stable=True)
    ids_restore = torch.empty_like(ids_shuffle)
    ids_restore.scatter_(1, ids_shuffle, torch.arange(n, device=mask.device).expand(b, n))
    return VisibleIndex(ids_shuffle, ids_restore, keep)


def same_count_rows(where: torch.Tensor) -> torch.Tensor | None:
    """Long[B, K]: the places where `where` (Bool[B, N]) is True, row by row and ascending (the order
    of `x[where]`), when every row has the same count K. None when the counts differ, or when
    `where` lives on a device: it is read only in host memory, where reading waits for nothing."""
    if where.device.type != "cpu" or where.ndim != 2 or where.shape[0] == 0:
        return None
    counts = where.sum(1)
    if not (counts == counts[0]).all():
        return None
    return where.nonzero()[:, 1].view(where.shape[0], int(counts[0]))


def padded_rows(where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(places Long[B, M], valid Bool[B, M]): row b's places where `where` (Bool[B, N]) is True
    first, ascending, then padding up to M, the largest count of a row; `valid` marks the real ones,
    so `x.gather(places)[valid]` is `x[where]`. Built where the mask is: read on the host, free;
    on a device, reading M waits for it."""
    counts = where.sum(1)
    m = int(counts.max()) if counts.numel() else 0
    places = where.long().argsort(dim=1, descending=True, stable=True)[:, :m]
    valid = torch.arange(m, device=where.device) < counts.unsqueeze(1)
    return places, valid


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: [B, L, *F], ids: Long[B, M] -> [B, M, *F], row b taking x[b, ids[b]]; a batch of one
    (`x: [1, L, *F]`, shared positions) serves every row of `ids`."""
    if x.shape[0] == 1 and ids.shape[0] != 1:
        return x[0][ids]
    flat = x.reshape(*x.shape[:2], -1)
    out = flat.gather(1, ids.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    return out.reshape(*ids.shape, *x.shape[2:])


def restore(visible: torch.Tensor, filler: torch.Tensor, index: VisibleIndex) -> torch.Tensor:
    """Put tokens back in place. visible: [B, K, D]; filler: [B, L - K, D] (or broadcastable
    [1, 1, D]) for the hidden places -> [B, L, D] in the original order."""
    b, k, d = visible.shape
    filler = filler.expand(b, index.ids_shuffle.shape[1] - k, d)
    return gather_tokens(torch.cat([visible, filler], dim=1), index.ids_restore)
