"""VIOLET (Fu et al. 2021, "VIOLET: End-to-End Video-Language Transformers with Masked Visual-token
Modeling", arXiv:2111.12681): one Transformer over raw video patches and words, pretrained with
masked language modeling (MLM), video-text matching (VTM) and Masked Visual-token Modeling (MVM):
hidden video patches are predicted as the DISCRETE tokens that a frozen image tokenizer (DALL-E's
dVAE in the paper) gives them, a classification target instead of pixel regression.

Here, at toy scale:
- tokens: [CLS], then every `patch x patch` patch of every frame (a linear map of its pixels plus
  fixed 3-D sin-cos space-time positions, row-major over (frame, row, column)), then the words
  (learned embeddings, 1-D sin-cos positions); a learned type embedding per modality. The paper's
  Video Swin backbone and separate cross-modal Transformer become one plain Transformer.
- MVM mask: `SpaceTimeBlockMask`, VIOLET's blockwise masking (random cuboids of patches spanning
  several frames) made exact: `round(video_ratio * T*h*w)` patches per row. Hidden patches enter as a
  learned mask embedding (BERT style; the paper's code zeroes their pixels instead). The paper's
  second masker, attended masking (hide what the text attends to most), is not implemented.
- MVM target (`mvm_target`): "tokens", the frozen tokenizer's id of each hidden patch (its grid
  must equal the patch grid: one id per patch per frame), cross-entropy; "pixels", the patch's
  pixels, mean squared error (masked frame modeling, the ablation VIOLET argues against); None, no
  MVM and no video masking (the MLM + VTM baseline).
- MLM: `max(1, round(word_ratio * length))` real words per row become the mask token (id V).
- VTM: `ceil(B / 2)` rows read the caption of another row that differs (`uniter.swap_captions`); a
  linear head on [CLS] says matched or not, cross-entropy over every row. MLM and MVM are scored on
  the matched rows only: the paper's code computes them in the pass over the aligned pairs, and a
  swapped caption does not describe its video.
The loss is mlm + vtm + mvm, each a mean over its own places (the paper's unweighted sum).

batch: {"videos": Float[B, T, C, H, W] in [0, 1], "tokens": Long[B, L_t] (pads 0), "lengths": Long[B]},
optionally "visual_tokens": Long[B, T*h*w], the tokenizer's ids computed once beforehand (the
paper's code, too, reads precomputed dVAE tokens); without them each step runs the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from ..masking.base import Masker
from ..masking.spacetime_block import SpaceTimeBlockMask
from ..nn.embedding import sincos_nd
from ..nn.image_text import ImageTextConfig
from ..nn.patch import PatchEmbed, patchify
from ..nn.transformer import Transformer, init_weights
from .base import ObjectiveOutput
from .mae import masked_mean, patch_mse
from .uniter import conditional_masks, swap_captions

MVM_TARGETS = ("tokens", "pixels", None)
VIDEO, TEXT = 0, 1  # type ids


@dataclass(frozen=True)
class VideoTextConfig(ImageTextConfig):
    """`ImageTextConfig` for clips of `frames` square frames; positions are 3-D sin-cos (t, y, x)."""

    patch: int = 8
    frames: int = 4

    SINCOS_AXES = 3

    @property
    def patches(self) -> int:
        """L, patch tokens per clip: frames * grid * grid."""
        return self.frames * self.grid * self.grid

    @property
    def layout(self) -> Layout:
        return Layout.video(self.frames, self.grid, self.grid, name="video")


class VIOLETModel(nn.Module):
    """[CLS], video patches, words through one Transformer; heads for words (V logits) and matching (2)."""

    def __init__(self, cfg: VideoTextConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_dim, cfg.dim)
        self.word = nn.Embedding(cfg.vocab_size + 1, cfg.dim)  # + the mask token
        self.modality = nn.Embedding(2, cfg.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.dim))
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.word_head = nn.Linear(cfg.dim, cfg.vocab_size)
        self.match_head = nn.Linear(cfg.dim, 2)
        shape = (cfg.frames, cfg.grid, cfg.grid)
        self.register_buffer("video_pos", sincos_nd(shape, cfg.dim).unsqueeze(0), persistent=False)
        self.register_buffer("text_pos", sincos_nd((cfg.text_length,), cfg.dim).unsqueeze(0), persistent=False)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_embedding, std=0.02)

    def patches(self, videos: torch.Tensor) -> torch.Tensor:
        """videos Float[B, T, C, H, W] -> Float[B, T*h*w, p*p*C], row-major over (frame, row, column)."""
        c = self.cfg
        if videos.ndim != 5 or tuple(videos.shape[1:]) != (c.frames, c.channels, c.image_size, c.image_size):
            raise ValueError(f"videos must be [B, {c.frames}, {c.channels}, {c.image_size}, {c.image_size}], "
                             f"got {tuple(videos.shape)}")
        return patchify(videos.flatten(0, 1), c.patch).reshape(videos.shape[0], c.patches, c.patch_dim)

    def forward(self, patches: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                hidden: torch.Tensor | None = None) -> torch.Tensor:
        """patches Float[B, L, p*p*C]; tokens Long[B, L_t] (id V where hidden); hidden Bool[B, L]: those
        patches enter as the mask embedding. Returns [B, 1 + L + L_t, D]; pads are never attended to."""
        c = self.cfg
        if tokens.ndim != 2 or tokens.shape[1] != c.text_length:
            raise ValueError(f"tokens must be [B, {c.text_length}], got {tuple(tokens.shape)}")
        b, t = tokens.shape
        v = self.patch_embed(patches)  # [B, L, D]
        if hidden is not None:
            v = torch.where(hidden.to(v.device).unsqueeze(-1), self.mask_embedding.to(v.dtype), v)
        v = v + self.video_pos + self.modality.weight[VIDEO]
        words = self.word(tokens) + self.text_pos + self.modality.weight[TEXT]
        x = torch.cat([self.cls.expand(b, -1, -1), v, words], dim=1)
        keys = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
        keys[:, x.shape[1] - t :] = torch.arange(t, device=x.device) < lengths.unsqueeze(1)
        return self.transformer(x, keys[:, None, None, :])


class VIOLETDraw(NamedTuple):
    """What one step hides and swaps."""

    shown: torch.Tensor  # Long[B, L_t]: the caption each row reads (another clip's where not matched)
    lengths: torch.Tensor  # Long[B]: its length
    matched: torch.Tensor  # Bool[B]: the caption is the clip's own
    words: torch.Tensor  # Bool[B, L_t]: hidden words
    video: torch.Tensor  # Bool[B, L]: hidden patches (none without MVM)


class VIOLET(nn.Module):
    """MLM + VTM + MVM around a `VIOLETModel`. `tokenizer`: a frozen module with
    `encode(images Float[B, C, H, W]) -> Long[B, h, w]` and `codebook_size` (e.g. `nn/image_tokenizer`),
    needed for `mvm_target="tokens"` only."""

    def __init__(self, model: VIOLETModel, tokenizer: nn.Module | None = None, *, mvm_target: str | None = "tokens",
                 masker: Masker | None = None, video_ratio: float = 0.15, word_ratio: float = 0.15):
        super().__init__()
        if mvm_target not in MVM_TARGETS:
            raise ValueError(f"mvm_target must be one of {MVM_TARGETS}, got {mvm_target!r}")
        if not (0 < video_ratio <= 1 and 0 < word_ratio <= 1):
            raise ValueError(f"video_ratio and word_ratio must lie in (0, 1], got {video_ratio}, {word_ratio}")
        cfg = model.cfg
        self.model, self.mvm_target = model, mvm_target
        self.masker = masker or SpaceTimeBlockMask()
        self.video_ratio, self.word_ratio = video_ratio, word_ratio
        self.mvm_head = None
        if mvm_target == "tokens":
            if tokenizer is None:
                raise ValueError("mvm_target='tokens' needs a tokenizer")
            if tuple(tokenizer.grid) != (cfg.grid, cfg.grid):
                raise ValueError(f"the tokenizer's grid {tuple(tokenizer.grid)} must equal the patch grid "
                                 f"{(cfg.grid, cfg.grid)}: one visual token per patch")
            self.mvm_head = nn.Linear(cfg.dim, tokenizer.codebook_size)
        elif mvm_target == "pixels":
            self.mvm_head = nn.Linear(cfg.dim, cfg.patch_dim)
        if self.mvm_head is not None:
            init_weights(self.mvm_head)
        self.tokenizer = tokenizer  # after init_weights: a given tokenizer keeps its own weights
        if tokenizer is not None:
            tokenizer.requires_grad_(False)

    @torch.no_grad()
    def targets(self, videos: torch.Tensor) -> torch.Tensor:
        """Long[B, T*h*w]: the tokenizer's id of every patch of every frame (eval mode: a VQ tokenizer
        restarts no codes while labelling)."""
        self.tokenizer.eval()
        frames = videos.flatten(0, 1)  # [B*T, C, H, W]
        return self.tokenizer.encode(frames).reshape(videos.shape[0], -1)

    def draw(self, tokens: torch.Tensor, lengths: torch.Tensor, generator=None) -> VIOLETDraw:
        b, cfg = tokens.shape[0], self.model.cfg
        if tokens.ndim != 2 or tokens.shape[1] != cfg.text_length or lengths.shape != (b,):
            raise ValueError(f"tokens must be [B, {cfg.text_length}] and lengths [B], got {tuple(tokens.shape)} "
                             f"and {tuple(lengths.shape)}")
        shown, shown_lengths, matched = swap_captions(tokens, lengths, torch.ones(b, dtype=torch.bool,
                                                                                  device=tokens.device), generator)
        words, _ = conditional_masks(torch.zeros(b, dtype=torch.long), shown_lengths.cpu(), cfg.text_length, 1,
                                     word_ratio=self.word_ratio, generator=generator)
        if self.mvm_target is None:
            video = torch.zeros(b, cfg.patches, dtype=torch.bool)
        else:
            video = self.masker(cfg.layout, b, ratio=self.video_ratio, generator=generator)
        return VIOLETDraw(shown, shown_lengths, matched, words.to(tokens.device), video.to(tokens.device))

    def losses(self, batch: dict, draw: VIOLETDraw, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        """The step's loss for a given draw; `targets` (Long[B, L] ids or Float[B, L, p*p*C] pixels)
        replaces the MVM targets read from the videos."""
        model, cfg = self.model, self.model.cfg
        patches = model.patches(batch["videos"])
        h = model(patches, draw.shown.masked_fill(draw.words, cfg.vocab_size), draw.lengths, draw.video)
        zero, own = h.sum() * 0.0, draw.matched.unsqueeze(1)

        logits = model.word_head(h[:, 1 + cfg.patches :])  # [B, L_t, V]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), draw.shown.flatten(), reduction="none")
        scored_words = draw.words & own
        mlm = masked_mean(ce.view_as(draw.shown), scored_words) + zero
        word_acc = masked_mean((logits.argmax(-1) == draw.shown).float(), scored_words)

        match = model.match_head(h[:, 0]).float()  # [B, 2]
        vtm = F.cross_entropy(match, draw.matched.long())
        vtm_acc = (match.argmax(-1) == draw.matched.long()).float().mean()

        metrics = {"mlm": mlm.detach(), "vtm": vtm.detach(), "word_acc": word_acc.detach(), "vtm_acc": vtm_acc.detach()}
        mvm = zero
        if self.mvm_head is not None:
            scored = draw.video & own
            pred = self.mvm_head(h[:, 1 : 1 + cfg.patches])  # [B, L, codes] or [B, L, p*p*C]
            if self.mvm_target == "tokens":
                ids = targets if targets is not None else batch.get("visual_tokens")
                if ids is None:
                    ids = self.targets(batch["videos"])
                ce = F.cross_entropy(pred.flatten(0, 1).float(), ids.flatten(), reduction="none").view_as(ids)
                mvm = masked_mean(ce, scored) + zero
                metrics["mvm_acc"] = masked_mean((pred.argmax(-1) == ids).float(), scored).detach()
            else:
                mvm = masked_mean(patch_mse(pred, patches if targets is None else targets), scored) + zero
            metrics["mvm"] = mvm.detach()
        loss = mlm + vtm + mvm
        return ObjectiveOutput(loss, {"loss": loss.detach(), **metrics})

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        return self.losses(batch, self.draw(batch["tokens"], batch["lengths"], generator))


@torch.no_grad()
def match_scores(objective: VIOLET, videos: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                 chunk: int = 512) -> torch.Tensor:
    """Float[M, K]: the VTM log-odds (matched logit minus mismatched) of every clip (videos
    Float[M, T, C, H, W]) with every candidate caption (captions Long[K, L_t], lengths Long[K]), the
    video whole."""
    model = objective.model
    model.eval()
    patches = model.patches(videos)
    out = torch.empty(videos.shape[0], captions.shape[0])
    for k in range(captions.shape[0]):
        for s in range(0, videos.shape[0], chunk):
            p = patches[s : s + chunk]
            tokens, lens = captions[k].expand(p.shape[0], -1), lengths[k].expand(p.shape[0])
            logits = model.match_head(model(p, tokens, lens)[:, 0]).float()
            out[s : s + chunk, k] = logits[:, 1] - logits[:, 0]
    return out


@torch.no_grad()
def recover_words(objective: VIOLET, videos: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                  hide: torch.Tensor) -> torch.Tensor:
    """Hide the words where `hide` (Bool[M, L_t]) is True all at once, the video whole; returns
    Bool[M, L_t], True where a hidden word is predicted (argmax) right."""
    model, cfg = objective.model, objective.model.cfg
    model.eval()
    h = model(model.patches(videos), tokens.masked_fill(hide, cfg.vocab_size), lengths)
    pred = model.word_head(h[:, 1 + cfg.patches :]).argmax(-1)
    return (pred == tokens) & hide



@torch.no_grad()
def caption_scores(objective: VIOLET, videos: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                   hide: torch.Tensor) -> torch.Tensor:
    """Float[M, K]: for every clip (videos Float[M, T, C, H, W]) and candidate caption (captions
    Long[K, L_t], lengths Long[K]), the summed log-probability of the candidate's words where `hide`
    (Bool[K, L_t]) is True, all of them hidden at once, the video whole: a masked-LM zero-shot
    classifier. Candidates that read the same (the same visible words, mask places and length)
    share one forward pass."""
    model, cfg = objective.model, objective.model.cfg
    model.eval()
    patches = model.patches(videos)
    shown = captions.masked_fill(hide, cfg.vocab_size)
    groups: dict[tuple, list[int]] = {}
    for k in range(captions.shape[0]):
        groups.setdefault((*shown[k].tolist(), int(lengths[k])), []).append(k)
    out = torch.empty(videos.shape[0], captions.shape[0])
    for ks in groups.values():
        m = videos.shape[0]
        h = model(patches, shown[ks[0]].expand(m, -1), lengths[ks[0]].expand(m))
        logp = model.word_head(h[:, 1 + cfg.patches :]).float().log_softmax(-1)  # [M, L_t, V]
        for k in ks:
            where = hide[k].nonzero().flatten()
            out[:, k] = logp[:, where, captions[k, where]].sum(-1)
    return out
