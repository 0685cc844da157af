"""Follow the Flow (Kaplan et al. 2025, arXiv:2504.01137) on a small text-to-glyphs model trained
here, 3 seeds. The prompt names two glyphs ("latin small letter a" and "greek capital letter omega",
the Unicode names of `data/image_sets.py`'s glyphs, items 1 and 2); a text encoder (a bidirectional
project `Transformer`, 2 blocks) encodes [start, item 1's words, item 2's words], where every word reads
every word and the start token reads only itself (its encoding is the same for every prompt, so
keeping it alone is an empty prompt); a decoder
(`eval/token_flow.decode_subset`, 2 blocks) reads the encoded tokens and 32 patch queries and draws a
16 x 32 canvas, item 1's glyph on the left and item 2's on the right, trained by mean squared error
on real renders (one of the 12 faces at random) with every token kept.

Then each half is drawn with a subset of the encoded tokens kept (the others removed after the text
encoder) and judged by the nearest class mean of the training renders (16 x 16, Euclidean):

- full prompt; the item's own tokens; the item's own last token alone (contextual: it has read the
  whole prompt); the other item's tokens alone (leakage: what of this item flowed into them); the
  start token alone (an empty prompt). Each subset keeps the start token. Control: the other item's
  tokens encoded without this item's words (the paper's uncontextualised representation), where no
  information can have flowed.

The figure: each condition's judge accuracy, and its share of the item's information between the
empty prompt (0) and the full prompt (1), on 400 held-out prompt pairs (class pairs never drawn in
training; each half scored, so 800 items per seed).

    .venv/bin/python benchmarks/token_flow.py                # 3 seeds; writes runs/token_flow/table.md
    .venv/bin/python benchmarks/token_flow.py --seeds 0 --steps 100

The model trains with the one `Trainer`; runs are kept under --runs (default runs/token_flow/sSEED)
and reused when their result.json exists.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe
from spread import mean_std as ms
from torch import nn

from unmask.data.image_sets import load
from unmask.eval.token_flow import PADDING, START, decode_subset, flow_shares, keep_items, keep_last
from unmask.nn.patch import unpatchify
from unmask.nn.text_condition import PAD, WordVocab
from unmask.nn.transformer import Transformer, init_weights
from unmask.objectives.base import ObjectiveOutput
from unmask.train.trainer import TrainConfig, fit

SIZE, PATCH = 16, 4  # each glyph 16 x 16; the canvas 16 x 32 is 4 x 8 patches of 4 x 4
CONDITIONS = ("full", "own", "own last token", "other", "other, encoded alone", "empty")


class TextToGlyphPair(nn.Module):
    """batch {"left": Long[B], "right": Long[B]} (indices of training renders) -> the mean squared
    error of the canvas drawn from their two class names, every encoded token kept."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...], dim: int, depth: int):
        super().__init__()
        self.vocab = WordVocab.from_prompts(classes)
        self.slot = self.vocab.longest(classes)
        self.register_buffer("images", images)  # Float[I, 1, 16, 16]
        self.register_buffer("labels", labels)  # Long[I]
        self.register_buffer("words", self.vocab.encode(list(classes), self.slot))  # Long[K, slot]
        tokens = 1 + 2 * self.slot
        self.embed = nn.Embedding(len(self.vocab) + 1, dim)  # + the start token
        self.text_pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.encoder = Transformer(dim, depth, 4)
        self.queries = nn.Parameter(torch.zeros(1, 2 * (SIZE // PATCH) ** 2, dim))
        self.decoder = Transformer(dim, depth, 4)
        self.head = nn.Linear(dim, PATCH * PATCH)
        init_weights(self)
        nn.init.trunc_normal_(self.text_pos, std=0.02)
        nn.init.trunc_normal_(self.queries, std=0.02)

    def prompt(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class ids Long[B] x 2 -> word ids Long[B, M] and item ids Long[B, M] (START, 1, 2, PADDING)."""
        start = torch.full_like(left, len(self.vocab)).unsqueeze(1)
        ids = torch.cat([start, self.words[left], self.words[right]], 1)  # [B, M]
        items = torch.cat([torch.full_like(start, START), torch.ones_like(self.words[left]),
                           2 * torch.ones_like(self.words[right])], 1)
        return ids, items.masked_fill(ids == PAD, PADDING)

    def encode(self, ids: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Float[B, M, D]: every word reads every non-padding token; the start token reads itself
        alone, so its encoding is the same for every prompt (the empty prompt holds nothing)."""
        m = ids.shape[1]
        reads = (items != PADDING)[:, None, :].expand(-1, m, -1).clone()  # [B, M, M]
        reads[:, 0] = False
        reads[:, 0, 0] = True
        return self.encoder(self.embed(ids) + self.text_pos, reads.unsqueeze(1))

    def draw(self, left: torch.Tensor, right: torch.Tensor, keep: torch.Tensor | None = None,
             alone: int | None = None) -> torch.Tensor:
        """Float[B, 1, 16, 32] from the class ids; keep: Bool[B, M] (None: every non-padding token);
        `alone` (an item): encode the prompt without that item's words (they are padding)."""
        ids, items = self.prompt(left, right)
        if alone is not None:
            items = items.masked_fill(items == alone, PADDING)
        memory = self.encode(ids, items)
        keep = items != PADDING if keep is None else keep
        out = decode_subset(self.decoder, memory, self.queries.expand(len(ids), -1, -1), keep)  # [B, Q, D]
        return unpatchify(self.head(out), PATCH, 1, SIZE, 2 * SIZE)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        left, right = batch["left"], batch["right"]
        target = torch.cat([self.images[left], self.images[right]], 3)  # [B, 1, 16, 32]
        loss = F.mse_loss(self.draw(self.labels[left], self.labels[right]), target)
        return ObjectiveOutput(loss, {"loss": loss.detach()})


def renders(split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    s = load("glyphs", split)
    x = F.interpolate(s.images.float() / 255.0, size=(SIZE, SIZE), mode="area")  # Float[M, 1, 16, 16]
    return x, s.labels, s.classes


def class_pairs(classes: int, count: int, seed: int, avoid: set | None = None) -> torch.Tensor:
    """Long[count, 2]: distinct ordered class pairs (a != b), none of `avoid`."""
    g = torch.Generator().manual_seed(seed)
    out: list[tuple[int, int]] = []
    seen = set(avoid or ())
    while len(out) < count:
        a, b = torch.randint(classes, (2,), generator=g).tolist()
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return torch.tensor(out)


@torch.no_grad()
def judge(halves: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """halves: Float[B, 1, 16, 16] -> Long[B], the class whose mean render is nearest."""
    return torch.cdist(halves.flatten(1), means.flatten(1)).argmin(1)


@torch.no_grad()
def measure(model: TextToGlyphPair, pairs: torch.Tensor, means: torch.Tensor) -> dict[str, float]:
    model.eval()
    left, right = pairs[:, 0], pairs[:, 1]
    _, items = model.prompt(left, right)
    hits: dict[str, list[torch.Tensor]] = {c: [] for c in CONDITIONS}
    for item, other, side, truth in ((1, 2, slice(0, SIZE), left), (2, 1, slice(SIZE, 2 * SIZE), right)):
        keeps = {"full": keep_items(items, [1, 2]), "own": keep_items(items, [item]),
                 "own last token": keep_last(items, item), "other": keep_items(items, [other]),
                 "empty": keep_items(items, [])}
        for c, keep in keeps.items():
            drawn = model.draw(left, right, keep)[..., side]  # [B, 1, 16, 16]
            hits[c].append(judge(drawn, means) == truth)
        # the other item's tokens encoded without this item's words (uncontextualised): no flow possible
        drawn = model.draw(left, right, keeps["other"], alone=item)[..., side]
        hits["other, encoded alone"].append(judge(drawn, means) == truth)
    return {c: float(torch.cat(h).double().mean()) for c, h in hits.items()}


def run_one(seed: int, args, data) -> dict:
    folder = args.runs / f"s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    images, labels, classes = data
    k = len(classes)
    torch.manual_seed(seed)
    model = TextToGlyphPair(images, labels, classes, args.dim, args.depth)
    held = class_pairs(k, args.pairs, 777)  # the held-out class pairs, the same for every seed
    g = torch.Generator().manual_seed(seed)
    left = torch.randint(len(labels), (args.train_pairs,), generator=g)
    right = torch.randint(len(labels), (args.train_pairs,), generator=g)
    bad = {(int(a), int(b)) for a, b in held} | {(c, c) for c in range(k)}
    ok = torch.tensor([(int(a), int(b)) not in bad for a, b in zip(labels[left], labels[right], strict=True)])
    train = {"left": left[ok], "right": right[ok]}
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=50, seed=seed, log_every=50)
    c0 = time.process_time()
    fit(model, train, cfg, folder, {"seed": seed, "steps": args.steps, "dim": args.dim, "depth": args.depth},
        progress=False)
    means = torch.stack([images[labels == c].mean(0) for c in range(k)])  # [K, 1, 16, 16]
    scores = measure(model, held, means)
    result = {"seed": seed, "train_cpu_s": time.process_time() - c0, "acc": scores,
              "share": flow_shares(scores)}
    done.write_text(json.dumps(result, indent=1))
    print(f"seed {seed}: " + ", ".join(f"{c} {v:.3f}" for c, v in scores.items()) +
          f"  ({result['train_cpu_s']:.0f} CPU s)", flush=True)
    return result


def table(results: list[dict], args) -> str:
    lines = [
        f"Follow the Flow on a text-to-glyph-pair model ({args.steps} steps, batch {args.batch}, lr {args.lr}, "
        f"width {args.dim}, encoder and decoder depth {args.depth}; seeds {', '.join(map(str, args.seeds))}); "
        f"{args.pairs} held-out class pairs x 2 items; judge: nearest class mean of the training renders "
        f"(111 classes, chance 0.009).",
        "",
        "| encoded tokens kept (with the start token) | judge accuracy on the item | share of the item's "
        "information (empty 0, full 1) | per seed |",
        "|---|---|---|---|",
    ]
    for c in CONDITIONS:
        acc = [r["acc"][c] for r in results]
        share = [r["share"][c] for r in results]
        lines.append(f"| {c} | {ms(acc)} | {ms(share)} | {', '.join(f'{s:.3f}' for s in share)} |")
    lines += ["", f"Training CPU seconds per model (one thread): "
                  f"{ms([r['train_cpu_s'] for r in results], '.0f')}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--train-pairs", type=int, default=50_000)
    p.add_argument("--runs", type=Path, default=Path("runs/token_flow"))
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    data = renders("train")
    results = [run_one(s, args, data) for s in args.seeds]
    text = table(results, args)
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
