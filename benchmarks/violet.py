"""VIOLET (Fu et al. 2021, arXiv:2111.12681) on captioned moving digits (`data/image_text.py`
`moving_digits`, 4 frames of 32 x 32, captions "a 3 moving up left"; held out: the clips of the
held-out digits), 3 seeds, every method with the same steps, batch, learning rate, width and depth,
each trained with the one `Trainer`:

- `no_mvm`: MLM + VTM, the video whole (the baseline without MVM);
- `mvm_tokens`: + Masked Visual-token Modeling: blockwise space-time masking, the hidden patches
  predicted as the ids of a frozen VQ image tokenizer (`nn/image_tokenizer.py`, one token per 8 x 8
  patch per frame, trained once per frame on the training frames and kept in the run folder);
- `mvm_pixels`: the same masking, the hidden patches' pixels regressed (masked frame modeling).

Metrics on the held-out clips (the first --eval-clips of them), the video whole:
- zero-shot classification: the VTM log-odds of each clip with each of the 80 captions (10 digits x 8
  directions); top-1 = the best caption is the clip's own;
- text-to-video retrieval: for each caption present among those clips, the clip with the highest VTM
  log-odds; R@1 = it carries that caption (mean over the captions);
- zero-shot classification by the masked LM: the digit and direction words of each of the 80
  captions hidden at once, the caption scored by the summed log-probability of its own words there
  (`caption_scores`); top-1 as above;
- direction words: every direction word of the caption hidden at once ("up left": both), the rest
  of the caption and the video whole; right = all of them recovered (argmax). Only the motion tells
  them. The digit word (hidden alone) is reported beside it.

    .venv/bin/python benchmarks/violet.py                     # 3 seeds; writes runs/violet/table.md
    .venv/bin/python benchmarks/violet.py --seeds 0 --steps 100

Runs are kept under --runs (default runs/violet/METHOD-sSEED, the tokenizer in runs/violet/tokenizer)
and reused when their result.json exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import time

import torch
from captioned import captioned
from machine import describe
from seeded_runs import budget_arguments, column, keep_table, run_once
from spread import paired_row

from unmask.data.image_text import Vocab
from unmask.nn.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from unmask.objectives.image_tokenizer import TokenizerTraining
from unmask.objectives.violet import (
    VIOLET,
    VideoTextConfig,
    VIOLETModel,
    caption_scores,
    match_scores,
    recover_words,
)
from unmask.train.trainer import TrainConfig, fit

METHODS = ("no_mvm", "mvm_tokens", "mvm_pixels")
FRAMES = 4


def clips(split: str, vocab: Vocab | None, length: int | None):
    data, s, vocab, length = captioned("moving_digits", split, vocab, length, frames=FRAMES)
    videos = data.pop("images").unsqueeze(2)  # [M, T, 1, 32, 32]
    return {"videos": videos, **data}, s, vocab, length


def tokenizer(args, frames: torch.Tensor) -> tuple[ImageTokenizer, float]:
    """The frozen visual tokenizer, trained once on every training frame (Uint8[M*T, 1, 32, 32]); and
    the CPU seconds that took in this process (0 when it was reused)."""
    torch.manual_seed(0)
    tok = ImageTokenizer(ImageTokenizerConfig(image_size=32, channels=1, width=16, downsample=args.patch,
                                              quantizer="vq", codes=args.codes, code_dim=16))
    tc = TrainConfig(steps=args.tokenizer_steps, batch_size=64, lr=2e-3, warmup=20, seed=0, log_every=50)
    c0 = time.process_time()
    fit(TokenizerTraining(tok), {"images": frames}, tc, args.runs / "tokenizer",
        {"tokenizer_steps": args.tokenizer_steps, "codes": args.codes, "patch": args.patch}, progress=False)
    return tok.eval(), time.process_time() - c0


@torch.no_grad()
def visual_tokens(tok: ImageTokenizer, videos: torch.Tensor) -> torch.Tensor:
    """Float[M, T, 1, H, W] -> Long[M, T*h*w], the ids the objective would compute each step."""
    return torch.cat([tok.encode(v.flatten(0, 1)).reshape(v.shape[0], -1) for v in videos.split(256)])


def build(method: str, seed: int, args, cfg: VideoTextConfig, tok: ImageTokenizer) -> VIOLET:
    torch.manual_seed(seed)  # the weights' initialisation
    target = {"no_mvm": None, "mvm_tokens": "tokens", "mvm_pixels": "pixels"}[method]
    return VIOLET(VIOLETModel(cfg), tok if target == "tokens" else None, mvm_target=target,
                  video_ratio=args.video_ratio, word_ratio=args.word_ratio)


@torch.no_grad()
def evaluate(objective: VIOLET, test: dict, s, vocab: Vocab, length: int, n: int) -> dict[str, float]:
    videos, tokens, lengths, labels = test["videos"][:n], test["tokens"][:n], test["lengths"][:n], s.labels[:n]
    candidates, cand_lengths = vocab.encode(s.classes, length)  # the 80 captions, class order
    scores = match_scores(objective, videos, candidates, cand_lengths)  # [n, 80]
    top1 = float((scores.argmax(1) == labels).double().mean())
    present = labels.unique()
    retrieval = float((labels[scores[:, present].argmax(0)] == present).double().mean())
    slots = torch.arange(length)
    named = ((slots == 1) | (slots >= 3)) & (slots < cand_lengths.unsqueeze(1))  # the digit and direction words
    mlm_top1 = float((caption_scores(objective, videos, candidates, cand_lengths, named).argmax(1) == labels)
                     .double().mean())
    direction = (slots >= 3) & (slots < lengths.unsqueeze(1))  # "a D moving <direction words>"
    right = recover_words(objective, videos, tokens, lengths, direction)
    direction_acc = float((right == direction).all(1).double().mean())
    digit = (slots == 1).expand_as(direction)
    digit_acc = float(recover_words(objective, videos, tokens, lengths, digit)[:, 1].double().mean())
    return {"zero_shot_top1": top1, "t2v_r1": retrieval, "mlm_zero_shot_top1": mlm_top1,
            "direction_words": direction_acc, "digit_word": digit_acc}


def run_one(method: str, seed: int, args, data, cfg, tok) -> dict:
    (train, train_tokens), (test, s, vocab, length) = data
    batch = {**train, "visual_tokens": train_tokens} if method == "mvm_tokens" else train
    return run_once(method, seed, args, lambda: build(method, seed, args, cfg, tok), batch,
                    lambda objective: evaluate(objective, test, s, vocab, length, args.eval_clips))


def table(results: dict, args) -> str:
    def col(method, key):
        return column(results, method, key)

    rows = ["| figure (held-out clips, video whole) | +MVM tokens (ours) | baseline | paired delta per seed |",
            "|---|---|---|---|"]
    figures = (("zero_shot_top1", "zero-shot top-1 over 80 captions (VTM), chance 0.013"),
               ("t2v_r1", "text-to-video R@1 (VTM)"),
               ("mlm_zero_shot_top1", "zero-shot top-1 over 80 captions (MLM likelihood), chance 0.013"),
               ("direction_words", "direction words recovered (MLM), chance 0.25 given the word count"),
               ("digit_word", "digit word recovered (MLM), chance 0.1"))
    for key, label in figures:
        for base, name in (("no_mvm", "no MVM"), ("mvm_pixels", "MVM pixels")):
            rows.append(paired_row(f"{label}: vs {name}", col("mvm_tokens", key), col(base, key)))
    budget = (f"{args.steps} steps, batch {args.batch}, lr {args.lr}, width {args.dim}, depth {args.depth}, "
              f"patch {args.patch}, video ratio {args.video_ratio}, word ratio {args.word_ratio}, "
              f"seeds {', '.join(map(str, args.seeds))}; {args.eval_clips} held-out clips")
    return "\n".join(rows) + f"\n\nBudget (every method): {budget}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget_arguments(p, steps=1300, batch=32, dim=48, depth=3, methods=METHODS, runs="runs/violet")
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--video-ratio", type=float, default=0.15)
    p.add_argument("--word-ratio", type=float, default=0.15)
    p.add_argument("--codes", type=int, default=64)
    p.add_argument("--tokenizer-steps", type=int, default=300)
    p.add_argument("--eval-clips", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe(), flush=True)
    c0 = time.process_time()
    train, s_train, vocab, length = clips("train", None, None)
    test, s_test, _, _ = clips("test", vocab, length)
    tok, tok_cpu = tokenizer(args, s_train.images.flatten(0, 1).unsqueeze(1))
    train_tokens = visual_tokens(tok, train["videos"])
    used = train_tokens.unique().numel()
    print(f"tokenizer: {used} of {args.codes} codes used on the training frames ({tok_cpu:.0f} CPU s)", flush=True)
    cfg = VideoTextConfig(frames=FRAMES, image_size=32, channels=1, patch=args.patch, vocab_size=vocab.size,
                          text_length=length, dim=args.dim, depth=args.depth, heads=4)
    data = ((train, train_tokens), (test, s_test, vocab, length))
    results = {m: [run_one(m, s, args, data, cfg, tok) for s in args.seeds] for m in args.methods}
    runs_cpu = sum(r["train_cpu_s"] + r["eval_cpu_s"] for rs in results.values() for r in rs)
    print(f"CPU time: this process {time.process_time() - c0:.0f} s; the runs' own (train + eval, "
          f"reused ones included) {runs_cpu:.0f} s", flush=True)
    if set(results) == set(METHODS):
        keep_table(args.runs, table(results, args))


if __name__ == "__main__":
    main()
