"""Tiny trained runs for the export and `model.init` tests, made in a second each: the recipe's own
objective and checkpoint, trained one step on made-up rows (mlm-code, with a small BPE trained on a
few lines of Python) or on the digits (mae-digits). Every weight is first drawn at random (biases and
LayerNorms too), so a weight copied to the wrong place, transposed or left out changes the outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from unmask.recipes import Run, get

V, N = 300, 16  # data tokens (the BPE's vocabulary) and tokens per chunk
CODE = ["def add(a, b):\n    return a + b\n", "class Box:\n    def __init__(self, x):\n        self.x = [x, 1.5]\n",
        "for i in range(10):\n    print(i, 'done', {i: i ** 2})\n", "import os\nos.path.join('a', \"b\")  # c\n"]
MLM = ["train.steps=1", "train.warmup=1", "train.batch_size=4", "model.dim=16", "model.depth=2", "model.heads=2",
       f"data.vocab_size={V}", f"data.length={N}"]
MAE = ["train.steps=1", "train.warmup=1", "train.batch_size=8", "model.dim=16", "model.depth=2", "model.heads=2",
       "model.decoder_dim=8", "model.decoder_depth=1"]


def scramble(objective: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn afresh, N(0, 0.3) (1 + that for LayerNorm weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in objective.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            p.copy_(noise + 1 if "norm" in name and name.endswith("weight") else noise)


def tokenizer_file(folder: Path, texts: list[str] = CODE * 20) -> Path:
    """A byte-level BPE of V tokens (the code recipes' specials first) trained on `texts`, saved as
    folder/tokenizer.json."""
    from unmask.data.code import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    train_tokenizer(texts, V).save(path)
    return path


def mlm_run(folder: Path, *overrides: str, seed: int = 0) -> Path:
    """An mlm-code run trained one step: checkpoint and tokenizer.json in `folder`."""
    recipe = get("mlm-code")().with_overrides([*MLM, *overrides])
    run = Run(folder, progress=False)
    tokenizer_file(folder)
    objective = recipe.objective()
    scramble(objective, seed)
    tokens = torch.randint(0, V, (16, N), generator=torch.Generator().manual_seed(seed))
    recipe.fit(run, objective, {"tokens": tokens})
    return folder


def mae_run(folder: Path, *overrides: str, seed: int = 0) -> Path:
    """A mae-digits run trained one step on the digits."""
    from unmask.recipes.mae_digits import images

    recipe = get("mae-digits")().with_overrides([*MAE, *overrides])
    objective = recipe.objective()
    scramble(objective, seed)
    recipe.fit(Run(folder, progress=False), objective, {"images": images("train")[:64]})
    return folder


def noise_for(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ViTMAE's `noise` that hides exactly `mask` (Bool[B, L]): it keeps the patches of least noise,
    so visible ones get noise in [0, 0.5) and hidden ones [1, 1.5)."""
    return mask.float() + 0.5 * torch.rand(mask.shape, generator=generator)


def digits(n: int) -> torch.Tensor:
    from unmask.recipes.mae_digits import images

    return images("test")[:n]
