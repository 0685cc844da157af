"""w2v-BERT (Chung, Zhang, Han, Chiu, Qin, Pang, Wu 2021, "w2v-BERT: Combining Contrastive Learning and
Masked Language Modeling for Self-Supervised Speech Pre-Training", arXiv:2108.06209): one network
learns discrete speech units by contrast in its lower blocks and predicts those units at masked
frames in its upper blocks, both losses trained together end to end.

On log-mel frames mel: Float[B, T, mels] (batch {"mel", optional "lengths": Long[B] valid frames,
optional "confidence": Float[B, T'] for Ask2Mask}):

- feature encoder: the utterance standardised (one mean and spread per utterance), two 1-D
  convolutions over time, the first with stride 2, GELU, LayerNorm: latents z Float[B, T', D], T' =
  ceil(T / 2) (w2v-BERT subsamples 4x with 2-D convolutions; our utterances are 24 to 48 frames);
- span masking of latent frames (`masking/wav2vec_span.py`, wav2vec 2.0's spans at an exact count);
  hidden frames are replaced by a learned vector; a convolutional relative position embedding (wav2vec
  2.0's, kernel 9, grouped by heads) is added, since `nn.Transformer` has no positions;
- quantizer: VQ-VAE's `VectorQuantizer` (nn/quantizers.py, nearest code, straight-through, dead-code
  restarts) over a projection of the UNMASKED latents gives each frame a target vector q_t and an id;
  w2v-BERT uses wav2vec 2.0's Gumbel quantizer with a codebook diversity term; a VQ with restarts keeps
  its codes in use without that term, so there is none here, and the VQ loss is added instead;
- contrastive module (the first `contrast_depth` blocks): InfoNCE at each masked frame t between a
  projection c_t of its output and q_t, against K distractors q_t' drawn uniformly (with replacement)
  from the OTHER masked frames of the same utterance, cosine similarity over temperature 0.1 (wav2vec
  2.0); a distractor with the same quantizer id as the positive is left out, as wav2vec 2.0 does for
  a distractor equal to the positive (they are the same vector);
- MLM module (the remaining blocks, fed the contrastive module's output): a linear head predicts the
  quantizer id of each masked frame, cross-entropy.

loss = contrastive_weight * L_contrastive + mlm_weight * L_MLM (+ the VQ loss). `mode` gives the two
baselines in the same network (same blocks, same steps):
- "contrastive": wav2vec 2.0 alone: no MLM term, the contrastive loss on the final blocks' output;
- "mlm": MLM alone: with no contrastive term nothing would train a learned quantizer, so the targets
  come from BEST-RQ's frozen random-projection quantizer (Chiu, Qin, Zhang, Yu, Wu 2022,
  arXiv:2202.01855): pairs of mel frames (one per latent frame), standardised per frame, projected by a
  fixed random matrix and assigned the nearest of a fixed random unit codebook by cosine.

With `weighted=True` and a batch "confidence", each row's loss is weighted by Ask2Mask's utterance
weight (`masking/ask2mask.py`); the masker (span or Ask2Mask) reads "confidence" as its `scores`.

`features(mel, layer)` is the frozen encoder for probes and for other recipes (MaskGCT's semantic
tokens): nothing is hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from ..masking import Masker
from ..masking.ask2mask import utterance_weights
from ..masking.wav2vec_span import Wav2VecSpanMask
from ..nn import Transformer
from ..nn.quantizers import VectorQuantizer
from ..nn.transformer import init_weights
from .base import ObjectiveOutput
from .mae import masked_mean

MODES = ("w2v-bert", "contrastive", "mlm")
POSITION_KERNEL = 9  # wav2vec 2.0 uses 128 frames at 50 Hz; 9 latent frames here span about 0.2 s


def latent_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Long[B]: valid latent frames of rows with `lengths` valid mel frames (the stride-2 encoder: ceil(T / 2))."""
    return (lengths + 1) // 2


def standardise(mel: torch.Tensor) -> torch.Tensor:
    """Float[B, T, M] -> the same, each utterance shifted and scaled to mean 0 and spread 1 (log-mel values
    are about -11 to 5: unscaled, the first convolution would start saturated)."""
    mean = mel.mean(dim=(1, 2), keepdim=True)
    return (mel - mean) / mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)


class FeatureEncoder(nn.Module):
    """mel Float[B, T, mels] -> latents Float[B, ceil(T / 2), dim]."""

    def __init__(self, mels: int, dim: int):
        super().__init__()
        self.subsample = nn.Conv1d(mels, dim, 3, stride=2, padding=1)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.subsample(standardise(mel).transpose(1, 2)))
        return self.norm(F.gelu(self.conv(x)).transpose(1, 2))


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ's frozen targets: mel Float[B, T, mels] -> ids Long[B, ceil(T / 2)]. Buffers only (saved
    with the model, never trained); drawn from `seed` alone."""

    def __init__(self, mels: int, codes: int, code_dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        projection = torch.randn(2 * mels, code_dim, generator=g) * (2.0 / (2 * mels + code_dim)) ** 0.5  # Xavier
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", F.normalize(torch.randn(codes, code_dim, generator=g), dim=1))

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.shape[1] % 2:  # the stride-2 encoder's last frame sees one mel frame: pair it with itself
            mel = torch.cat([mel, mel[:, -1:]], 1)
        pairs = mel.float().unflatten(1, (-1, 2)).flatten(2)  # [B, T', 2 mels]
        pairs = F.layer_norm(pairs, pairs.shape[-1:])
        z = F.normalize(pairs @ self.projection, dim=-1)
        return (z @ self.codebook.t()).argmax(-1)


def draw_distractors(mask: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Long[B, T, k]: for each masked frame of mask (Bool[B, T]), k positions drawn uniformly with
    replacement from the OTHER masked frames of its row. An unmasked frame, or the one masked frame of a
    row that has one, gets its own position (which `info_nce` leaves out: same id)."""
    b, t = mask.shape
    mask = mask.cpu()
    filled = mask.long().cumsum(1)  # [B, T]: masked frames up to and including t
    n = filled[:, -1:]  # [B, 1]
    own = (filled - 1).unsqueeze(-1)  # rank of frame t among its row's masked frames
    u = torch.rand(b, t, k, generator=generator, dtype=torch.float64)
    j = torch.floor(u * (n - 1).clamp_min(0).unsqueeze(-1)).long()  # uniform on 0 .. n-2
    j = j + (j >= own).long()  # skip the frame itself: uniform on the other n - 1 ranks
    where = torch.searchsorted(filled.contiguous(), (j + 1).flatten(1)).view(b, t, k)  # rank -> position
    usable = (mask & (n >= 2)).unsqueeze(-1)
    return torch.where(usable, where.clamp_max(t - 1), torch.arange(t).view(1, t, 1))


def info_nce(context: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
             distractors: torch.Tensor, temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """wav2vec 2.0's contrastive loss per frame. context, targets: Float[B, T, C]; ids: Long[B, T] (the
    targets' codes); mask: Bool[B, T]; distractors: Long[B, T, K] positions in the same row. Returns
    (loss Float[B, T], 0 where unmasked; hit Bool[B, T]: the positive scores above every distractor):
    -log exp(cos(c_t, q_t) / tau) / (exp(cos(c_t, q_t) / tau) + sum_k exp(cos(c_t, q_k) / tau)),
    leaving out distractors with the positive's id."""
    b, t, k = distractors.shape
    c, q = F.normalize(context.float(), dim=-1), F.normalize(targets.float(), dim=-1)
    flat = distractors.flatten(1)  # [B, T*K]
    negatives = q.gather(1, flat.unsqueeze(-1).expand(-1, -1, q.shape[-1])).view(b, t, k, -1)
    sims = torch.cat([(c * q).sum(-1, keepdim=True), torch.einsum("btc,btkc->btk", c, negatives)], -1) / temperature
    same = ids.gather(1, flat).view(b, t, k) == ids.unsqueeze(-1)
    sims = torch.cat([sims[..., :1], sims[..., 1:].masked_fill(same, float("-inf"))], -1)
    loss = -sims.log_softmax(-1)[..., 0]
    hit = (sims[..., 1:] < sims[..., :1]).all(-1)
    return loss * mask, hit & mask


class W2VBert(nn.Module):
    """The w2v-BERT objective (see the module docstring); batch -> ObjectiveOutput."""

    def __init__(self, mels: int = 40, dim: int = 64, depth: int = 4, heads: int = 4, *, contrast_depth: int = 2,
                 codes: int = 64, code_dim: int = 16, mode: str = "w2v-bert", ratio: float = 0.5, span: int = 4,
                 distractors: int = 10, temperature: float = 0.1, contrastive_weight: float = 1.0,
                 mlm_weight: float = 1.0, masker: Masker | None = None, weighted: bool = False, seed: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "w2v-bert" and not 0 < contrast_depth < depth:
            raise ValueError(f"w2v-BERT needs 0 < contrast_depth < depth, got {contrast_depth} of {depth}")
        if not 0.0 < ratio <= 1.0 or distractors < 1 or temperature <= 0:
            raise ValueError(f"need 0 < ratio <= 1, distractors >= 1, temperature > 0; got {ratio}, {distractors}, "
                             f"{temperature}")
        self.mode, self.ratio, self.k, self.temperature = mode, ratio, distractors, temperature
        self.contrastive_weight, self.mlm_weight, self.weighted = contrastive_weight, mlm_weight, weighted
        # blocks of the contrastive module
        self.split = {"w2v-bert": contrast_depth, "contrastive": depth, "mlm": 0}[mode]
        self.masker = masker or Wav2VecSpanMask(span=span)
        self.encoder = FeatureEncoder(mels, dim)
        self.mask_embedding = nn.Parameter(torch.zeros(dim))
        self.position = nn.Conv1d(dim, dim, POSITION_KERNEL, padding=POSITION_KERNEL // 2, groups=heads)
        self.blocks = Transformer(dim, depth, heads)
        if mode != "mlm":
            self.to_code = nn.Linear(dim, code_dim)
            self.to_contrast = nn.Linear(dim, code_dim)
            self.quantizer = VectorQuantizer(codes, code_dim, seed=seed)
        if 0 < self.split < depth:
            self.contrast_norm = nn.LayerNorm(dim)
        if mode != "contrastive":
            self.head = nn.Linear(dim, codes)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_embedding, std=0.02)
        if mode == "mlm":
            self.random_quantizer = RandomProjectionQuantizer(mels, codes, code_dim, seed)

    def positioned(self, x: torch.Tensor) -> torch.Tensor:
        """Float[B, T', D] -> the same plus the convolutional position embedding."""
        return x + F.gelu(self.position(x.transpose(1, 2))).transpose(1, 2)

    def modules_out(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Float[B, T', D] -> (the contrastive module's output or None in "mlm" mode, the final output)."""
        contrast = None
        for i, block in enumerate(self.blocks.blocks):
            x = block(x)
            if i + 1 == self.split and hasattr(self, "contrast_norm"):
                contrast = self.contrast_norm(x)
        final = self.blocks.norm(x)
        return (final if self.split == len(self.blocks.blocks) else contrast), final

    def features(self, mel: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """mel Float[B, T, mels] -> Float[B, ceil(T / 2), D], nothing hidden: the final output (layer None),
        or the residual stream after `layer` blocks (0 = the positioned latents), layer-normalised
        without learned scale."""
        x = self.positioned(self.encoder(mel))
        if layer is None:
            return self.modules_out(x)[1]
        if not 0 <= layer <= len(self.blocks.blocks):
            raise ValueError(f"layer must lie in 0..{len(self.blocks.blocks)}, got {layer}")
        for block in self.blocks.blocks[:layer]:
            x = block(x)
        return F.layer_norm(x, x.shape[-1:])

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        mel = batch["mel"].to(self.mask_embedding.device, non_blocking=True)
        z = self.encoder(mel)  # [B, T', D]
        b, t = z.shape[:2]
        context = {}
        lengths = None
        if "lengths" in batch:
            lengths = latent_lengths(batch["lengths"])
            context["lengths"] = lengths
        confidence = batch.get("confidence")
        if confidence is not None:
            context["scores"] = confidence
        mask = self.masker(Layout.seq(t), b, ratio=self.ratio, generator=generator, **context)
        distractors = draw_distractors(mask, self.k, generator) if self.mode != "mlm" else None
        mask = mask.to(z.device, non_blocking=True)
        x = self.positioned(torch.where(mask.unsqueeze(-1), self.mask_embedding.to(z.dtype), z))
        contrast, final = self.modules_out(x)
        weights = mask.float()
        if self.weighted and confidence is not None:
            weights = weights * utterance_weights(confidence.to(z.device), lengths).unsqueeze(1)
        loss = z.new_zeros(())
        metrics: dict[str, torch.Tensor] = {"masked": mask.float().mean()}
        if self.mode == "mlm":
            ids = self.random_quantizer(mel)
        else:
            q = self.quantizer(self.to_code(z), generator)
            ids = q.indices.detach()
            nce, hit = info_nce(self.to_contrast(contrast), q.quantized, ids, mask,
                                distractors.to(z.device, non_blocking=True), self.temperature)
            contrastive = masked_mean(nce * weights, mask)
            loss = loss + self.contrastive_weight * contrastive + q.loss
            metrics.update(contrastive=contrastive.detach(), contrastive_acc=masked_mean(hit.float(), mask).detach(),
                           vq=q.loss.detach(), perplexity=q.perplexity)
        if self.mode != "contrastive":
            logits = self.head(final).float()  # [B, T', codes]
            ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, T']
            mlm = masked_mean(ce * weights, mask)
            loss = loss + self.mlm_weight * mlm
            metrics.update(mlm=mlm.detach(), mlm_acc=masked_mean((logits.argmax(-1) == ids).float(), mask).detach())
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss, metrics)
