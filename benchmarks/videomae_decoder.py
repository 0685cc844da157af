"""VideoMAE V2's claim (Wang et al. 2023, P65): masking the decoder cuts its cost. The decoder of the
`videomae-digits` model (4 x 8 x 8 = 256 tubelets, tube mask 0.9, decoder width 64, depth 2) runs
forward and backward on the same encoder output, once as VideoMAE (a mask token at every hidden
place: 24 visible + 232 queries) and once as V2 (queries only where a running-cell mask of ratio 0.5
keeps the place: 24 visible + 128 queries). Printed per step of 64 clips:

- decoder tokens per clip, and their ratio;
- decoder FLOPs, forward + backward, counted by torch's FlopCounterMode (the CPU attention kernel,
  which its table lacks, counted with torch's own attention formula);
- decoder milliseconds, forward + backward, the median of `--repeats` alternated runs on one thread;
- the whole training step (encoder, decoder, loss, backward) the same way.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/videomae_decoder.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe
from torch.utils import flop_counter

from unmask.data.video import moving_digits
from unmask.objectives.videomae import VideoMaskedAutoencoding
from unmask.recipes.videomae_digits import VideoMAEDigits

aten = torch.ops.aten


def _attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _attention,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward}


def decoder_pass(objective: VideoMaskedAutoencoding, encoded, queries):
    """Decoder forward + backward; queries None: every hidden place (VideoMAE)."""
    objective.zero_grad(set_to_none=True)
    pred = objective.model.decoder(encoded) if queries is None else objective.model.decoder(encoded, queries)
    pred.square().mean().backward()


def whole_step(objective: VideoMaskedAutoencoding, videos, mask, generator):
    objective.zero_grad(set_to_none=True)
    objective.reconstruct(videos, mask, generator).loss.backward()


def flops(fn) -> int:
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def median_ms(fns: dict, repeats: int) -> dict:
    """Alternate the callables so that a busy machine slows them alike; median milliseconds."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(1000 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(describe())
    recipe = VideoMAEDigits()
    plain = recipe.objective()
    dual = recipe.with_overrides(["objective.variant=v2"]).objective()
    dual.load_state_dict(plain.state_dict())  # the same weights: only the decoded places differ
    videos = moving_digits("train", seed=0).videos[: args.batch]
    mask = plain.draw_mask(args.batch, torch.Generator().manual_seed(0))
    decoder_mask = dual.draw_decoder_mask(args.batch, torch.Generator().manual_seed(1))
    queries = (~decoder_mask).nonzero()[:, 1].view(args.batch, -1)
    encoded = plain.model.encoder(videos, mask)
    encoded = encoded._replace(tokens=encoded.tokens.detach().requires_grad_())

    tokens = {"videomae": mask.shape[1], "v2": encoded.index.keep + queries.shape[1]}
    counted = {"videomae": flops(lambda: decoder_pass(plain, encoded, None)),
               "v2": flops(lambda: decoder_pass(dual, encoded, queries))}
    for _ in range(2):  # warm-up
        decoder_pass(plain, encoded, None)
        decoder_pass(dual, encoded, queries)
    ms = median_ms({"videomae": lambda: decoder_pass(plain, encoded, None),
                    "v2": lambda: decoder_pass(dual, encoded, queries)}, args.repeats)
    step = median_ms({"videomae": lambda: whole_step(plain, videos, mask, torch.Generator().manual_seed(2)),
                      "v2": lambda: whole_step(dual, videos, mask, torch.Generator().manual_seed(2))}, args.repeats)

    o = recipe.settings.objective
    print(f"videomae-digits decoder, batch {args.batch}, tube mask {o.ratio} ({encoded.index.keep} visible of "
          f"{mask.shape[1]}), V2 running cell {o.decoder_ratio}; torch {torch.__version__}, 1 thread, "
          f"median of {args.repeats}")
    print(f"{'':34}{'videomae':>12}{'v2':>12}{'v2 / videomae':>16}")
    rows = [("decoder tokens per clip", tokens, "{:.0f}"),
            ("decoder GFLOPs, fwd + bwd", {k: v / 1e9 for k, v in counted.items()}, "{:.3f}"),
            ("decoder ms, fwd + bwd", ms, "{:.1f}"),
            ("whole step ms, fwd + bwd", step, "{:.1f}")]
    for label, values, fmt in rows:
        print(f"{label:34}{fmt.format(values['videomae']):>12}{fmt.format(values['v2']):>12}"
              f"{values['v2'] / values['videomae']:>16.3f}")


if __name__ == "__main__":
    main()
