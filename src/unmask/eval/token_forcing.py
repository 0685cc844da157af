"""Unconditional Token Forcing (Hoscilowicz, Popiolek, Rudkowski, Bieniasz, Janicki 2024, "Hiding Text
in Large Language Models: Introducing Unconditional Token Forcing Confusion", arXiv:2406.02481, P31).

The idea: a text planted in a causal language model by fine-tuning (a hidden trigger -> a message) can
be found without the trigger, by feeding every vocabulary token alone (after the start token, no
prompt) and decoding greedily: continuations whose tokens are abnormally likely reveal the planted
text, which the model then tends to write out in full (often several times over).

`force_tokens` decodes every id (or the ids given) greedily for `steps` tokens, all ids in batches,
and keeps each chosen token's log-probability and each step's entropy. The scores read them:
- `mean_prob` over the first `steps` tokens is the paper's criterion: its screen decodes 3 tokens
  and keeps the ids whose mean greedy probability exceeds 0.95 (`flagged`); the candidates are then
  decoded further and read;
- `mean_logp` (the mean log-probability of the whole continuation) ranks long confident
  continuations, which is what a planted message is; `mean_entropy` and `confident_run` (the longest
  run of tokens each at or above a probability) describe them further.
`rank_forced` scores, screens and orders them; `token_forcing` forces and ranks in one call.

    forced = force_tokens(model.eval(), steps=16, bos_id=0)
    result = token_forcing(model.eval(), steps=16, bos_id=0)   # result.order[:10]: the top ids

The model is any causal LM, `model(tokens: Long[B, n]) -> logits Float[B, n, V]` where position i
reads tokens 0..i (`nn.CausalTokenModel`, the network of `objectives/autoregressive.py`); the
project's token models are asked for the last position's logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn.masked_model import MaskedTokenModel

PAPER_STEPS = 3  # tokens the paper's screen decodes per forced id
PAPER_THRESHOLD = 0.95  # the mean greedy probability above which the screen keeps an id


@dataclass(frozen=True)
class ForcedContinuations:
    """What greedy decoding after each forced id gave; row r belongs to `first[r]`."""
    first: torch.Tensor  # Long[M]: the forced ids
    tokens: torch.Tensor  # Long[M, S]: the greedy continuation
    logp: torch.Tensor  # Float64[M, S]: log-probability of each greedy token
    entropy: torch.Tensor  # Float64[M, S]: entropy (nats) of each step's next-token distribution

    def __len__(self) -> int:
        return self.first.shape[0]


@dataclass(frozen=True)
class TokenForcingResult:
    forced: ForcedContinuations
    score: torch.Tensor  # Float64[M]: what `order` sorts by (higher = more suspicious)
    flagged: torch.Tensor  # Bool[M]: the paper's screen (mean probability of the first tokens)
    order: torch.Tensor  # Long[M]: rows of `forced`, most suspicious first


def last_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """tokens: Long[B, n] -> Float[B, V], the next-token logits after the last position."""
    if isinstance(model, MaskedTokenModel):  # the head runs at the last position only
        where = torch.zeros_like(tokens, dtype=torch.bool)
        where[:, -1] = True
        return model(tokens, where)  # [B, V]
    return model(tokens)[:, -1]


@torch.no_grad()
def greedy_continue(model, prefix: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend every row of prefix (Long[B, P]) by `steps` argmax tokens.

    Returns (tokens Long[B, S], logp Float64[B, S], entropy Float64[B, S]): the chosen tokens, their
    log-probabilities and each step's entropy, from the float64 log-softmax of the model's logits.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tokens, chosen, logps, entropies = prefix, [], [], []
    for _ in range(steps):
        logp = torch.log_softmax(last_logits(model, tokens).double(), dim=-1)  # [B, V]
        best = logp.argmax(dim=-1)  # [B]; ties go to the lowest id
        p = logp.exp()
        # 0 * log 0 is 0: banned ids (-inf logits) add nothing to the entropy
        entropies.append(-(p * logp.masked_fill(p == 0, 0.0)).sum(dim=-1))
        logps.append(logp.gather(1, best[:, None]).squeeze(1))
        chosen.append(best)
        tokens = torch.cat([tokens, best[:, None]], dim=1)
    return torch.stack(chosen, 1), torch.stack(logps, 1), torch.stack(entropies, 1)


def _vocab_size(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None)


def _max_length(model) -> int | None:
    layout = getattr(getattr(model, "config", None), "layout", None)
    return getattr(layout, "n", None)


@torch.no_grad()
def force_tokens(model, ids: torch.Tensor | None = None, *, steps: int, bos_id: int | None = None,
                 vocab_size: int | None = None, batch_size: int = 1024) -> ForcedContinuations:
    """Feed each id alone (after `bos_id` when given) and decode `steps` tokens greedily.

    ids: Long[M], default every data id 0..V-1 (V from `vocab_size` or `model.config`). Rows are
    decoded `batch_size` at a time; the model should be in eval mode.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    v = vocab_size if vocab_size is not None else _vocab_size(model)
    if ids is None:
        if v is None:
            raise ValueError("give `ids` or `vocab_size`: the model does not say its vocabulary size")
        ids = torch.arange(v)
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if len(ids) == 0:
        raise ValueError("no ids to force")
    if ids.min() < 0 or (v is not None and ids.max() >= v):
        raise ValueError(f"forced ids must lie in 0..{'V-1' if v is None else v - 1}, got {ids.min()}..{ids.max()}")
    n, total = _max_length(model), steps + 1 + (bos_id is not None)
    if n is not None and total - 1 > n:  # the last token decoded is never read back
        raise ValueError(f"a forced id, the start token and {steps} steps need {total - 1} positions; "
                         f"the model has {n}")
    weight = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = weight.device if weight is not None else torch.device("cpu")
    parts = []
    for chunk in ids.split(batch_size):
        prefix = chunk[:, None].to(device)  # [b, 1]
        if bos_id is not None:
            prefix = torch.cat([torch.full_like(prefix, bos_id), prefix], dim=1)  # [b, 2]
        parts.append([t.cpu() for t in greedy_continue(model, prefix, steps)])
    tokens, logp, entropy = (torch.cat(x) for x in zip(*parts, strict=True))
    return ForcedContinuations(ids, tokens, logp, entropy)


def _first(x: torch.Tensor, steps: int | None) -> torch.Tensor:
    if steps is not None and not 1 <= steps <= x.shape[1]:
        raise ValueError(f"steps must lie in 1..{x.shape[1]}, got {steps}")
    return x if steps is None else x[:, :steps]


def mean_prob(forced: ForcedContinuations, steps: int | None = PAPER_STEPS) -> torch.Tensor:
    """Float64[M]: the mean probability of the first `steps` greedy tokens (all with None); the
    paper's score."""
    return _first(forced.logp, steps).exp().mean(dim=1)


def mean_logp(forced: ForcedContinuations, steps: int | None = None) -> torch.Tensor:
    """Float64[M]: the mean log-probability of the first `steps` greedy tokens (all with None)."""
    return _first(forced.logp, steps).mean(dim=1)


def mean_entropy(forced: ForcedContinuations, steps: int | None = None) -> torch.Tensor:
    """Float64[M]: the mean entropy of the first `steps` next-token distributions."""
    return _first(forced.entropy, steps).mean(dim=1)


def confident_run(forced: ForcedContinuations, threshold: float = PAPER_THRESHOLD) -> torch.Tensor:
    """Long[M]: the longest run of consecutive greedy tokens whose probability is at least `threshold`."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    sure = (forced.logp.exp() >= threshold).long()  # [M, S]
    run = torch.zeros(len(forced), dtype=torch.long)
    best = torch.zeros_like(run)
    for j in range(sure.shape[1]):
        run = (run + 1) * sure[:, j]
        best = torch.maximum(best, run)
    return best


def flagged(forced: ForcedContinuations, threshold: float = PAPER_THRESHOLD,
            steps: int = PAPER_STEPS) -> torch.Tensor:
    """Bool[M]: the paper's screen, mean probability of the first `steps` greedy tokens > threshold."""
    return mean_prob(forced, steps) > threshold


def rank_ids(score: torch.Tensor) -> torch.Tensor:
    """Long[M]: rows by descending score; equal scores keep their row order (stable)."""
    return torch.sort(score, descending=True, stable=True).indices


def rank_forced(forced: ForcedContinuations, score: str = "mean_logp", threshold: float = PAPER_THRESHOLD,
                screen_steps: int | None = None) -> TokenForcingResult:
    """Score, screen and rank forced continuations.

    score: "mean_logp" (mean log-probability of every decoded token) or "paper" (mean probability of
    the first `screen_steps`, ties broken by mean_logp). `flagged` is always the paper's screen.
    screen_steps: None is the paper's 3 (or every step when fewer were decoded).
    """
    if score not in ("mean_logp", "paper"):
        raise ValueError(f"score must be 'mean_logp' or 'paper', got {score!r}")
    if screen_steps is None:
        screen_steps = min(PAPER_STEPS, forced.tokens.shape[1])
    if not 1 <= screen_steps <= forced.tokens.shape[1]:
        raise ValueError(f"screen_steps must lie in 1..{forced.tokens.shape[1]} (steps decoded), got {screen_steps}")
    logp = mean_logp(forced)
    if score == "paper":
        value = mean_prob(forced, screen_steps)
        order = rank_ids(logp)  # the tie-break: a stable sort by the screen keeps this order among equals
        order = order[rank_ids(value[order])]
    else:
        order, value = rank_ids(logp), logp
    return TokenForcingResult(forced, value, flagged(forced, threshold, screen_steps), order)


def token_forcing(model, ids: torch.Tensor | None = None, *, steps: int, bos_id: int | None = None,
                  vocab_size: int | None = None, score: str = "mean_logp", threshold: float = PAPER_THRESHOLD,
                  screen_steps: int | None = None, batch_size: int = 1024) -> TokenForcingResult:
    """`force_tokens`, then `rank_forced`: every id forced, its continuation scored, screened and ranked."""
    if score not in ("mean_logp", "paper"):  # refused before the work
        raise ValueError(f"score must be 'mean_logp' or 'paper', got {score!r}")
    forced = force_tokens(model, ids, steps=steps, bos_id=bos_id, vocab_size=vocab_size, batch_size=batch_size)
    return rank_forced(forced, score, threshold, screen_steps)


def rank_of(result: TokenForcingResult, token_id: int) -> int:
    """The 1-based place of the row that forced `token_id` in `result.order`."""
    rows = torch.nonzero(result.forced.first == token_id).flatten()
    if len(rows) == 0:
        raise ValueError(f"id {token_id} was not forced")
    place = torch.nonzero(result.order == rows[0]).flatten()
    return int(place[0]) + 1
