"""`generate`'s per-step check of the logits as one float64 sum (`_finiteness`): NaN exactly where the
places flagged by `_not_finite` exist (NaN or +inf anywhere, -inf for every token at a hidden place),
0 otherwise, whatever the size of the finite logits."""

import itertools

import torch

from unmask.sampling.generate import _finiteness, _not_finite

VALUES = [0.0, -3.5, 7.0, float("nan"), float("inf"), float("-inf"), 3.0e38, -3.0e38]


def test_flags_exactly_the_broken_grids():
    seen = set()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for a, b in itertools.product(VALUES, repeat=2):
            for hidden_a, hidden_b in itertools.product([False, True], repeat=2):
                top = torch.tensor([[a, 1.0], [b, 2.0]], dtype=dtype)
                hidden = torch.tensor([[hidden_a, True], [hidden_b, False]])
                broken = bool(_not_finite(top, hidden).any())
                flag = _finiteness(top, hidden)
                assert flag.dtype == torch.float64 and flag.dim() == 0
                assert bool(torch.isfinite(flag)) != broken, (dtype, a, b, hidden_a, hidden_b)
                assert broken or flag.item() == 0
                seen.add(broken)
    assert seen == {True, False}


def test_huge_finite_logits_do_not_overflow_into_a_false_alarm():
    top = torch.full((64, 512), 1.0e308, dtype=torch.float64)
    top[::2] = -1.0e308
    assert _finiteness(top, torch.ones_like(top, dtype=torch.bool)).item() == 0
    top[3, 7] = float("-inf")  # a ruled-out place that is not hidden is fine, a hidden one is not
    hidden = torch.ones_like(top, dtype=torch.bool)
    hidden[3, 7] = False
    assert _finiteness(top, hidden).item() == 0
    hidden[3, 7] = True
    assert torch.isnan(_finiteness(top, hidden))
