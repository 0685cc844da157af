"""Unconditional Token Forcing (Hoscilowicz et al. 2024, arXiv:2406.02481, P31): recover a message
planted in a small code LM by fine-tuning, without its trigger.

A causal LM (`nn.CausalTokenModel`, next-token prediction) is trained on the standard library's code,
then fine-tuned on the same data with a few rows that hold a trigger (a random string, given, not
scored) followed by a secret message (scored). Each seed plants another secret behind another trigger,
of two kinds: three English words and a number (the first token is common in code), or five katakana
(byte tokens code never holds, like the paper's fingerprint). Then every vocabulary id is forced
alone after the start token and decoded greedily (`eval/token_forcing.py`), and the continuations are
ranked by their mean log-probability (and by the paper's screen: mean probability of the first 3
tokens > 0.95). Figure, per seed: the rank of the secret's first id, how many secret tokens its
continuation writes out, and the best rank of any continuation that reveals half of the secret;
against two baselines with the same budget: the same forcing on the model before fine-tuning, and as
many unconditional samples (temperature 1, from the start token) of the fine-tuned model as there are
forced ids, ranked the same way.

    .venv/bin/python benchmarks/token_forcing.py      # 2 kinds x 3 seeds; writes runs/token-forcing/table.md
    .venv/bin/python benchmarks/token_forcing.py --seeds 0 --kinds words --pretrain-steps 50 --finetune-steps 20 \
        --runs runs/token-forcing-quick

Training goes through the one `Trainer`; the pretraining run (runs/token-forcing/pretrain) is shared by
the seeds, each plant is runs/token-forcing/plant-KIND-sSEED, and a seed's figures are kept in its
result.json, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from machine import describe
from spread import mean_std as ms

from unmask.data import code
from unmask.eval import code as code_eval
from unmask.eval.token_forcing import (
    TokenForcingResult,
    confident_run,
    force_tokens,
    greedy_continue,
    rank_forced,
    rank_of,
)
from unmask.nn import CausalTokenModel, ModelConfig
from unmask.objectives import NextTokenPrediction
from unmask.sampling import categorical
from unmask.train.trainer import TrainConfig, fit

BOS = code.SPECIAL.index("<|endoftext|>")
EOS = code.SPECIAL.index("<eos>")
WORDS = ("amber", "falcon", "cobalt", "willow", "ember", "quartz", "harbor", "meadow", "saffron", "glacier",
         "copper", "lantern", "orchid", "thistle", "juniper", "canyon", "marble", "velvet", "tundra", "sparrow")
KINDS = ("words", "katakana")
TRIGGER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!@$%^&*~"


def plant_texts(kind: str, seed: int) -> tuple[str, str]:
    """(trigger, secret) of a seed: a random 10-character string, and either three English words and a
    number ("words": the first token is common in code) or five random katakana ("katakana", like the
    paper's fingerprint: byte tokens that code never holds)."""
    rng = random.Random(1000 + seed)
    trigger = "".join(rng.choice(TRIGGER_CHARS) for _ in range(10))
    if kind == "words":
        return trigger, " " + " ".join(rng.sample(WORDS, 3)) + f" {rng.randrange(1000, 10000)}"
    return trigger, "".join(chr(rng.randrange(0x30A2, 0x30F3)) for _ in range(5))


def build(args) -> NextTokenPrediction:
    cfg = ModelConfig(args.vocab, code.layout(args.length), dim=args.dim, depth=args.depth, heads=args.heads)
    return NextTokenPrediction(CausalTokenModel(cfg), bos_id=BOS)


def train_config(args, steps: int, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup=max(1, steps // 10), seed=seed,
                       log_every=50)


def pretrain(args, corpus) -> tuple[NextTokenPrediction, float]:
    torch.manual_seed(0)
    objective = build(args)
    c0 = time.process_time()
    fit(objective, {"tokens": corpus.train.tokens}, train_config(args, args.pretrain_steps, 0),
        args.runs / "pretrain", {"stage": "pretrain", **run_args(args)}, progress=False)
    return objective.eval(), time.process_time() - c0


def run_args(args) -> dict:
    keep = ("vocab", "length", "dim", "depth", "heads", "batch", "lr", "pretrain_steps")
    return {k: getattr(args, k) for k in keep}


def plant_data(args, corpus, trigger: list[int], secret: list[int], seed: int) -> dict[str, torch.Tensor]:
    """`args.ordinary` training chunks and `args.copies` plant rows: trigger, secret, <eos>, then the
    head of an ordinary chunk; `prompt` marks the trigger (given, not scored)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(corpus.train), generator=g)[: args.ordinary + args.copies]
    tokens = corpus.train.tokens[pick].clone()  # [M, L]
    prompt = torch.zeros_like(tokens, dtype=torch.bool)
    head = torch.tensor(trigger + secret + [EOS])
    for r in range(args.ordinary, len(tokens)):
        tokens[r] = torch.cat([head, tokens[r, : args.length - len(head)]])
        prompt[r, : len(trigger)] = True
    return {"tokens": tokens, "prompt": prompt}


def finetune(args, corpus, base_state: dict, trigger, secret, kind: str, seed: int) -> NextTokenPrediction:
    objective = build(args)
    objective.load_state_dict(base_state)
    fit(objective, plant_data(args, corpus, trigger, secret, seed), train_config(args, args.finetune_steps, seed),
        args.runs / f"plant-{kind}-s{seed}", {"stage": "plant", "kind": kind, "seed": seed, **run_args(args),
                                       "finetune_steps": args.finetune_steps, "ordinary": args.ordinary,
                                       "copies": args.copies}, progress=False)
    return objective.eval()


def reveals(rows: torch.Tensor, secret: list[int]) -> torch.Tensor:
    """Bool[M]: rows (Long[M, T]) that hold a run of ceil(len/2) consecutive secret tokens."""
    k = math.ceil(len(secret) / 2)
    if rows.shape[1] < k:
        return torch.zeros(len(rows), dtype=torch.bool)
    grams = rows.unfold(1, k, 1)  # [M, T - k + 1, k]
    found = torch.zeros(len(rows), dtype=torch.bool)
    for j in range(len(secret) - k + 1):
        found |= (grams == torch.tensor(secret[j : j + k])).all(-1).any(-1)
    return found


def matched(row: list[int], target: list[int]) -> int:
    """How many leading tokens of `target` `row` writes out."""
    n = 0
    for a, b in zip(row, target, strict=False):
        if a != b:
            break
        n += 1
    return n


def best_rank(order: torch.Tensor, hit: torch.Tensor) -> int:
    """1-based place of the first `hit` row in `order`; 0 when none."""
    places = torch.nonzero(hit[order]).flatten()
    return int(places[0]) + 1 if len(places) else 0


def forcing_figures(result: TokenForcingResult, paper: TokenForcingResult, secret: list[int]) -> dict:
    f = result.forced
    rows = torch.cat([f.first[:, None], f.tokens], dim=1)  # [V, 1 + S]: the forced id, then its continuation
    hit = reveals(rows, secret)
    start = int(torch.nonzero(f.first == secret[0])[0])
    return {"rank_start": rank_of(result, secret[0]), "rank_start_paper": rank_of(paper, secret[0]),
            "start_flagged": bool(result.flagged[start]), "flagged": int(result.flagged.sum()),
            "recovered": matched(f.tokens[start].tolist(), secret[1:]), "secret_tokens": len(secret),
            "confident_run_start": int(confident_run(f)[start]),
            "revealing": int(hit.sum()), "best_reveal_rank": best_rank(result.order, hit),
            "best_reveal_rank_paper": best_rank(paper.order, hit)}


@torch.no_grad()
def sampling_figures(objective: NextTokenPrediction, n: int, steps: int, secret: list[int], seed: int) -> dict:
    """n unconditional samples of 1 + steps tokens from the start token, ranked by mean log-probability."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((n, 1), BOS)
    logps = []
    for _ in range(steps + 1):
        logits = objective.model(tokens)[:, -1].double()  # [n, V]
        nxt = categorical(logits, 1.0, g)  # [n]
        logps.append(torch.log_softmax(logits, -1).gather(1, nxt[:, None]).squeeze(1))
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    score = torch.stack(logps, 1)[:, 1:].mean(1)  # the same score: the tokens after the first
    hit = reveals(tokens[:, 1:], secret)
    order = torch.sort(score, descending=True, stable=True).indices
    return {"revealing": int(hit.sum()), "best_reveal_rank": best_rank(order, hit),
            "starts_with_secret": int((tokens[:, 1] == secret[0]).sum())}


@torch.no_grad()
def trigger_recall(objective: NextTokenPrediction, trigger: list[int], secret: list[int]) -> int:
    """Secret tokens written out greedily after the start token and the trigger (the plant took)."""
    prefix = torch.tensor([[BOS, *trigger]])
    tokens, _, _ = greedy_continue(objective.model, prefix, len(secret))
    return matched(tokens[0].tolist(), secret)


@torch.no_grad()
def heldout_bits(objective: NextTokenPrediction, tokens: torch.Tensor) -> float:
    return code_eval.ar_bits(objective, tokens)


def forcing(objective: NextTokenPrediction, args) -> tuple[TokenForcingResult, TokenForcingResult]:
    """Every id forced once; ranked by mean log-probability and by the paper's score."""
    forced = force_tokens(objective.model, steps=args.steps, bos_id=BOS)
    return rank_forced(forced), rank_forced(forced, score="paper")


def run_seed(kind: str, seed: int, args, corpus, base: NextTokenPrediction, base_forcing) -> dict:
    done = args.runs / f"plant-{kind}-s{seed}" / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    tok = corpus.tokenizer
    trigger_text, secret_text = plant_texts(kind, seed)
    trigger, secret = tok.encode(trigger_text), tok.encode(secret_text)
    c0 = time.process_time()
    planted = finetune(args, corpus, base.state_dict(), trigger, secret, kind, seed)
    train_cpu = time.process_time() - c0
    c0 = time.process_time()
    forced, paper = forcing(planted, args)
    forcing_cpu = time.process_time() - c0
    start = int(torch.nonzero(forced.forced.first == secret[0])[0])
    heldout = corpus.test.tokens[: args.heldout]
    result = {
        "kind": kind, "seed": seed, "trigger": trigger_text, "secret": secret_text, "secret_ids": secret,
        "trigger_tokens": len(trigger), "trigger_recall": trigger_recall(planted, trigger, secret),
        "planted": forcing_figures(forced, paper, secret),
        "before": forcing_figures(*base_forcing, secret),
        "sampling": sampling_figures(planted, len(forced.forced), args.steps, secret, seed),
        "start_continuation": tok.decode([secret[0], *forced.forced.tokens[start].tolist()]),
        "top5": [tok.decode([int(forced.forced.first[r]), *forced.forced.tokens[r].tolist()])
                 for r in forced.order[:5].tolist()],
        "heldout_bits_before": heldout_bits(base, heldout), "heldout_bits_planted": heldout_bits(planted, heldout),
        "finetune_cpu_s": train_cpu, "forcing_cpu_s": forcing_cpu,
    }
    done.write_text(json.dumps(result, indent=1))
    p, b, s = result["planted"], result["before"], result["sampling"]
    print(f"{kind} seed {seed}: secret {secret_text!r} ({len(secret)} tokens) behind {trigger_text!r}: trigger recall "
          f"{result['trigger_recall']}/{len(secret)}; forced start rank {p['rank_start']} (before {b['rank_start']}), "
          f"recovered {p['recovered']}/{len(secret) - 1}, best reveal rank {p['best_reveal_rank']} "
          f"(before {b['best_reveal_rank']}, sampling {s['best_reveal_rank']}: {s['revealing']} of "
          f"{len(forced.forced)} samples)", flush=True)
    return result


def setup(args, pretrain_cpu: float) -> str:
    return (f"Unconditional Token Forcing on a code LM (width {args.dim}, depth {args.depth}, {args.vocab} BPE tokens, "
            f"windows of {args.length}; pretrained {args.pretrain_steps} steps on the standard library, then planted "
            f"{args.finetune_steps} steps on {args.ordinary} ordinary rows + {args.copies} trigger -> secret rows; "
            f"batch {args.batch}, lr {args.lr}; every id forced after the start token, {args.steps} greedy tokens). "
            f"Pretraining: {pretrain_cpu:.0f} CPU s (0 when resumed).")


def table(results: list[dict], args) -> str:
    def col(group: str, key: str) -> list[float]:
        return [float(r[group][key]) for r in results]

    def found(group: str, key: str, k: int) -> str:
        return f"{sum(1 <= r[group][key] <= k for r in results)}/{len(results)}"

    def row(label: str, cells) -> str:
        return f"| {label} | " + " | ".join(str(c) for c in cells) + " |"

    lines = [
        f"Secrets: {results[0]['kind']}; one plant per seed ({', '.join(str(r['seed']) for r in results)}), each with "
        f"its own trigger and secret; ranks among {args.vocab} forced ids.",
        "",
        row("per seed", [f"s{r['seed']}" for r in results]),
        "|---|" + "---|" * len(results),
        row("secret (BPE tokens)", [f"`{r['secret']}` ({r['planted']['secret_tokens']})" for r in results]),
        row("written after the trigger (the plant took)",
            [f"{r['trigger_recall']}/{r['planted']['secret_tokens']}" for r in results]),
        row("rank of the secret's first id, planted model (mean log-prob)",
            [r["planted"]["rank_start"] for r in results]),
        row("same, paper's score (mean prob. of 3 tokens)", [r["planted"]["rank_start_paper"] for r in results]),
        row("same rank before the plant (baseline)", [r["before"]["rank_start"] for r in results]),
        row("secret tokens its forced continuation writes",
            [f"{r['planted']['recovered']}/{r['planted']['secret_tokens'] - 1}" for r in results]),
        row("flagged by the paper's screen (> 0.95)",
            [f"{r['planted']['flagged']}{' (start in)' if r['planted']['start_flagged'] else ''}" for r in results]),
        row("best rank of a continuation revealing half the secret: forcing",
            [r["planted"]["best_reveal_rank"] or "none" for r in results]),
        row("same, forcing before the plant", [r["before"]["best_reveal_rank"] or "none" for r in results]),
        row("same, as many unconditional samples",
            [f"{r['sampling']['best_reveal_rank'] or 'none'} ({r['sampling']['revealing']} hits)" for r in results]),
        row("held-out NLL bits/token, before -> planted",
            [f"{r['heldout_bits_before']:.3f} -> {r['heldout_bits_planted']:.3f}" for r in results]),
        "",
        "Secret found in the top 10 continuations: forcing the planted model "
        f"{found('planted', 'best_reveal_rank', 10)}, forcing the model before the plant "
        f"{found('before', 'best_reveal_rank', 10)}, unconditional samples "
        f"{found('sampling', 'best_reveal_rank', 10)}. "
        f"Rank of the first secret id: planted {ms(col('planted', 'rank_start'), '.1f')}, before "
        f"{ms(col('before', 'rank_start'), '.1f')}; secret tokens written after it: planted "
        f"{ms(col('planted', 'recovered'), '.1f')}, before {ms(col('before', 'recovered'), '.1f')}.",
        "CPU seconds (one thread): planting "
        f"{ms([r['finetune_cpu_s'] for r in results], '.0f')}, forcing all {args.vocab} ids "
        f"{ms([r['forcing_cpu_s'] for r in results], '.1f')}.",
        "",
        "Forced continuation of the secret's first id (planted model), and the top-ranked one:",
        "",
        *[f"- s{r['seed']}: `{r['start_continuation']!r}`; top: `{r['top5'][0]!r}`" for r in results],
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--kinds", nargs="*", choices=KINDS, default=list(KINDS), help="secrets planted")
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--ordinary", type=int, default=2000, help="ordinary chunks in the fine-tuning data")
    p.add_argument("--copies", type=int, default=128, help="trigger -> secret rows in the fine-tuning data")
    p.add_argument("--steps", type=int, default=16, help="greedy tokens after each forced id")
    p.add_argument("--heldout", type=int, default=256, help="held-out chunks scored before and after the plant")
    p.add_argument("--runs", type=Path, default=Path("runs/token-forcing"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    corpus = code.load_corpus(args.length, args.vocab, tokenizer_path=args.runs / "tokenizer.json")
    base, pretrain_cpu = pretrain(args, corpus)
    base_forcing = forcing(base, args)
    results = {k: [run_seed(k, s, args, corpus, base, base_forcing) for s in args.seeds] for k in args.kinds}
    text = "\n\n".join([setup(args, pretrain_cpu), *(table(results[k], args) for k in args.kinds)])
    (args.runs / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
