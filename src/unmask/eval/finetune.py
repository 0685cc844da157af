"""Fine-tuning evaluation: train ALL weights of a pretrained encoder plus a pooled linear head on a
labelled task, then score held-out accuracy. It is how BERT (Devlin et al. 2019, arXiv:1810.04805)
and the papers that build on it measure pretraining: DeBERTa (He et al. 2021, arXiv:2006.03654),
ELECTRA (Clark et al. 2020, arXiv:2003.10555), ERNIE-Gram (Xiao et al. 2021, arXiv:2010.12148),
entity masking (Fernando & Ranathunga 2025, arXiv:2501.05700) and MEAP (Zhuang et al. 2025,
arXiv:2502.07490) report GLUE-style fine-tuned scores, where the frozen-feature probe of
`eval/probe.py` measures only what the features already hold.

The idea in one sentence: pretraining is judged by how good a starting point it is for supervised
training of the whole network, not by its frozen features.

    clf = finetune(model, dim, classes, tokens, labels, TrainConfig(steps=200, batch_size=32, lr=1e-3),
                   run_dir)                                   # every weight trained
    finetune(..., freeze=True)                                # the encoder kept bit-identical
    package_finetune(model, dim, corpus, config, run_dir)     # the stdlib package task of eval/code.py

The head is `objectives/classification.py`'s `PooledClassifier` trained by the one Trainer
(`train/trainer.fit`); with `pad_id` the mean runs over real tokens only. The code corpus packs
files into full windows and has no padding, so the package task passes no `pad_id`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UnmaskError
from ..objectives.classification import PooledClassifier
from ..train.trainer import TrainConfig, fit
from .code import probe_labels


class FinetuneClassifier(PooledClassifier):
    """`PooledClassifier` whose mean skips padding: logits = head(mean over the places where
    inputs != pad_id of backbone.features(inputs)). `pad_id=None`: the mean over every place."""

    def __init__(self, backbone: nn.Module, dim: int, classes: int, pad_id: int | None = None):
        super().__init__(backbone, dim, classes)
        self.pad_id = pad_id

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: Long[B, N] -> Float[B, classes]."""
        if self.pad_id is None:
            return super().logits(inputs)
        real = (inputs != self.pad_id).unsqueeze(-1)  # [B, N, 1]
        feats = self.backbone.features(inputs)  # [B, N, D]
        # a row of pads only would divide by zero; clamp and let its features be 0
        pooled = (feats * real).sum(1) / real.sum(1).clamp(min=1)
        return self.head(pooled)


@dataclass(frozen=True)
class FinetuneResult:
    accuracy: float  # held-out (or validation) accuracy after fine-tuning
    balanced_accuracy: float  # mean over classes of the recall: blind to a shift in the class mix
    majority: float  # share of the most frequent class among the scored labels
    train_examples: int
    scored_examples: int
    classes: int
    frozen: bool

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of predicted Long[M] equal to labels Long[M]."""
    if predicted.shape != labels.shape or labels.ndim != 1 or len(labels) == 0:
        raise UnmaskError(f"accuracy needs two non-empty Long[M] of one shape, got {tuple(predicted.shape)} "
                          f"and {tuple(labels.shape)}")
    return (predicted == labels).double().mean().item()


def balanced_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in labels Long[M] of the share of that class predicted right.
    The package mix of held-out files differs from the training files', and a head that learns the
    training prior loses plain accuracy for it; this score does not move with the mix."""
    accuracy(predicted, labels)  # the same checks
    recalls = [(predicted[labels == c] == c).double().mean() for c in labels.unique()]
    return torch.stack(recalls).mean().item()


def majority_share(labels: torch.Tensor) -> float:
    """Share of the most frequent class in labels Long[M]: what always guessing it scores."""
    return torch.bincount(labels).max().item() / len(labels)


def file_split(file_index: torch.Tensor, share: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held): positions into file_index Long[M], the held ones all chunks of a random `share` of
    the files. By file, not by chunk: neighbouring chunks of one file share names and would leak."""
    if not 0.0 < share < 1.0:
        raise UnmaskError(f"the validation share must lie in (0, 1), got {share}")
    files = file_index.unique()
    order = files[torch.randperm(len(files), generator=generator)]
    held_files = order[: max(1, round(share * len(files)))]
    held = torch.isin(file_index, held_files)
    if held.all():
        raise UnmaskError(f"a validation share of {share} over {len(files)} file(s) leaves no training chunk")
    return (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)


def _check(tokens: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    if tokens.ndim != 2 or tokens.dtype != torch.long:
        raise UnmaskError(f"tokens must be Long[M, N], got {tokens.dtype} {tuple(tokens.shape)}")
    if labels.shape != (tokens.shape[0],) or labels.dtype != torch.long:
        raise UnmaskError(f"labels must be Long[{tokens.shape[0]}] (one per row of tokens), got {labels.dtype} "
                          f"{tuple(labels.shape)}")
    if tokens.shape[0] == 0:
        raise UnmaskError("no labelled examples to fine-tune on")
    if classes < 2:
        raise UnmaskError(f"a classification task needs at least 2 classes, got {classes}")
    if labels.min() < 0 or labels.max() >= classes:
        raise UnmaskError(f"labels must lie in 0..{classes - 1}, got {labels.min().item()}..{labels.max().item()}")


def finetune(backbone: nn.Module, dim: int, classes: int, tokens: torch.Tensor, labels: torch.Tensor,
             config: TrainConfig, run_dir: Path, *, freeze: bool = False, pad_id: int | None = None,
             seed: int | None = None) -> FinetuneClassifier:
    """Train `backbone` (anything with `features(Long[B, N]) -> Float[B, N, dim]`; changed in place
    unless `freeze`) and a new linear head on tokens Long[M, N] with labels Long[M] in 0..classes-1,
    for `config.steps` steps of the one Trainer in `run_dir`. The head's weights are drawn from
    `seed` (default `config.seed`). `freeze=True` trains the head only: the linear probe, fitted by
    gradient descent. Returns the classifier, in eval mode."""
    _check(tokens, labels, classes)
    if not hasattr(backbone, "features"):
        raise UnmaskError(f"{type(backbone).__name__} has no `features(tokens)`; pass the network that has one")
    state = torch.random.get_rng_state()
    torch.manual_seed(config.seed if seed is None else seed)  # the head's initial weights only
    clf = FinetuneClassifier(backbone, dim, classes, pad_id)
    torch.random.set_rng_state(state)
    for p in backbone.parameters():
        p.requires_grad_(not freeze)
    run_config = {"finetune": {"dim": dim, "classes": classes, "freeze": freeze, "pad_id": pad_id,
                               "examples": tokens.shape[0], "length": tokens.shape[1]}}
    fit(clf, {"inputs": tokens, "labels": labels}, config, Path(run_dir), run_config, progress=False)
    return clf.eval()


def package_finetune(backbone: nn.Module, dim: int, corpus, config: TrainConfig, run_dir: Path, *,
                     validation: float = 0.0, freeze: bool = False, max_train: int = 0) -> FinetuneResult:
    """Fine-tune on the package task of `eval/code.py` (`probe_labels`: a chunk's top-level standard
    library package) and score it. validation > 0: hold out that share of the TRAINING files (by
    file) and score there, for choosing settings without touching the test split; 0: train on every
    labelled training chunk and score the held-out (test) chunks. max_train > 0 keeps that many
    training chunks (a seeded random choice)."""
    names, tri, ytr, tei, yte = probe_labels(corpus)
    x_tr, y_tr = corpus.train.tokens[tri], ytr
    if validation > 0:
        g = torch.Generator().manual_seed(config.seed)
        kept, held = file_split(corpus.train.file_index[tri], validation, g)
        x_te, y_te = x_tr[held], y_tr[held]
        x_tr, y_tr = x_tr[kept], y_tr[kept]
    else:
        x_te, y_te = corpus.test.tokens[tei], yte
    if max_train:
        pick = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(config.seed))[:max_train]
        x_tr, y_tr = x_tr[pick], y_tr[pick]
    clf = finetune(backbone, dim, len(names), x_tr, y_tr, config, run_dir, freeze=freeze)
    predicted = clf.predict(x_te)
    return FinetuneResult(accuracy(predicted, y_te), balanced_accuracy(predicted, y_te), majority_share(y_te),
                          len(x_tr), len(x_te), len(names), freeze)
