"""Masked LM training step: transformers' `BertForMaskedLM` + `DataCollatorForLanguageModeling`
against unmask's MLM (`MaskedTokenModeling` on `BertMaskedModel`), interleaved in one process.

    python benchmarks/mlm_vs_transformers.py                 # vocab 30522, length 128, batch 32
    python benchmarks/mlm_vs_transformers.py --steps 3 --threads 2

Equal work: the same architecture (BERT layout: post-norm, embedding LayerNorm, tied output
embeddings with a transform head, LayerNorm eps 1e-12, width 256, depth 4, 4 heads, MLP 1024),
dropout off in BERT (unmask has none), the same AdamW (torch's default implementation, lr 1e-4), the
same batches of 32 sequences `[CLS] x_1..x_126 [SEP]` (ids drawn uniformly from the non-special
vocabulary; content does not change the timing), 15% of the 126 content tokens hidden with 80/10/10
corruption, the collator's time counted on its side and the masker's on ours. The same weights give
the same loss (tests/test_mlm_vs_transformers.py). What differs is what each computes:
- transformers computes the 30522-way logits and their log-softmax at all 4096 positions;
- unmask computes them at the ~614 hidden positions only (`where`), and, as every row hides exactly
  19 tokens, its last block computes queries and MLP there only (`prune_last`; off in the third row).
The BERT mask id is one of its 30522 ids; unmask's data vocabulary is the other 30521, mask id 30521.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from machine import describe


def hf_side(vocab: int, length: int, dim: int, depth: int, heads: int, mlp: int, seed: int):
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab)}
    for name, i in (("[PAD]", 0), ("[UNK]", 100), ("[CLS]", 101), ("[SEP]", 102), ("[MASK]", 103)):
        words.pop(f"w{i}")
        words[name] = i
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="[UNK]")),
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                        intermediate_size=mlp, max_position_embeddings=length, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config), collator, tokenizer.mask_token_id


def our_side(vocab: int, length: int, dim: int, depth: int, heads: int, mlp: int, seed: int, prune: bool):
    from unmask.layout import Layout
    from unmask.masking import BertCorruption, RandomMask
    from unmask.nn.bert import BertConfig, BertMaskedModel
    from unmask.objectives import MaskedTokenModeling

    layout = Layout.seq(1, name="cls") + Layout.seq(length - 2, name="text") + Layout.seq(1, name="sep")
    torch.manual_seed(seed)
    model = BertMaskedModel(BertConfig(vocab - 1, layout, dim=dim, depth=depth, heads=heads,
                                       mlp_ratio=mlp / dim, prune_last=prune))
    return MaskedTokenModeling(model, RandomMask(("text",)), ratio=0.15, corruption=BertCorruption())


def batches(vocab: int, length: int, batch: int, steps: int, seed: int, mask_id: int):
    """Rows [CLS] x [SEP] with x uniform over the non-special ids; also in our ids (HF mask id removed)."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([0, 100, 101, 102, 103])
    content = torch.tensor([i for i in range(vocab) if i not in set(special.tolist())])
    for _ in range(steps):
        x = content[torch.randint(0, len(content), (batch, length - 2), generator=g)]
        ids = torch.cat([torch.full((batch, 1), 101), x, torch.full((batch, 1), 102)], dim=1)
        ours = ids - (ids > mask_id).long()  # our data ids skip the HF mask id
        yield ids, ours


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per side (after one warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=1024)
    p.add_argument("--no-unpruned", action="store_true", help="skip the row without prune_last")
    p.add_argument("--json", type=Path, help="also write the medians (s/step) to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    shape = (args.vocab, args.length, args.dim, args.depth, args.heads, args.mlp, 0)
    bert, collator, mask_id = hf_side(*shape)
    sides = {"transformers BertForMaskedLM": bert, "unmask MLM (prune_last)": our_side(*shape, prune=True)}
    if not args.no_unpruned:
        sides["unmask MLM (no prune_last)"] = our_side(*shape, prune=False)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in sides.items()}
    times = {k: [] for k in sides}

    def step(name, ids, ours, k):
        model, opt = sides[name], opts[name]
        t = time.perf_counter()
        if name.startswith("transformers"):
            examples = [{"input_ids": r, "special_tokens_mask": ((r == 101) | (r == 102)).long()} for r in ids]
            batch = collator(examples)
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        else:
            loss = model({"tokens": ours}, generator=torch.Generator().manual_seed(k))[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    names = list(sides)
    for k, (ids, ours) in enumerate(batches(args.vocab, args.length, args.batch, args.steps + 1, 0, mask_id)):
        order = names if k % 2 == 0 else names[::-1]  # alternate who goes first
        for name in order:
            dt = step(name, ids, ours, k)
            if k > 0:
                times[name].append(dt)
    load = os.getloadavg()[0]
    print(f"threads {torch.get_num_threads()}, vocab {args.vocab}, length {args.length}, batch {args.batch}, "
          f"width {args.dim}, depth {args.depth}, heads {args.heads}, MLP {args.mlp}; median of {args.steps} steps; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    base = statistics.median(times[names[0]])
    result = {}
    for name in names:
        med = statistics.median(times[name])
        result[name] = med
        print(f"  {name:32s} {med:7.3f} s/step   ({', '.join(f'{t:.2f}' for t in times[name])})"
              + ("" if name == names[0] else f"   transformers / unmask = {base / med:.2f}x"))
    if args.json:
        args.json.write_text(json.dumps({**result, "threads": torch.get_num_threads(), "load": load,
                                         "steps": args.steps}, indent=2))
    return result


if __name__ == "__main__":
    main()
