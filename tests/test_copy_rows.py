"""`copy_rows`: `index_copy_` along rows, moved as 16-byte words where the rows allow it, bit for bit."""

import pytest
import torch

from unmask.sampling.select import copy_rows


@pytest.mark.parametrize("dtype,v", [(torch.float32, 1024), (torch.float32, 1001), (torch.float64, 6),
                                     (torch.bfloat16, 24), (torch.bfloat16, 7), (torch.int64, 4)])
def test_copy_rows_equals_index_copy(dtype, v):
    """Rows that fit 16-byte words and rows that do not (the plain copy), NaN payloads and -0.0 kept."""
    g = torch.Generator().manual_seed(v)
    dst = (torch.randn(50, v, generator=g) * 100).to(dtype)
    src = (torch.randn(9, v, generator=g) * 100).to(dtype)
    if dtype.is_floating_point:
        src[0, 0], src[1, -1], src[2, 1 % v] = float("nan"), float("-inf"), -0.0
    places = torch.tensor([3, 0, 49, 7, 8, 20, 21, 30, 12])
    want = dst.clone().index_copy_(0, places, src)
    got = copy_rows(dst, places, src)
    assert got is dst
    assert torch.equal(got.view(torch.uint8) if dtype != torch.bfloat16 else got.view(torch.int16),
                       want.view(torch.uint8) if dtype != torch.bfloat16 else want.view(torch.int16))


def test_copy_rows_of_views_that_do_not_start_on_a_word():
    """A destination or source that starts mid-word, or is not contiguous, is copied the plain way."""
    base = torch.randn(41, 8)
    dst = base[1:]  # starts 8 floats in: on a word; then one that is not
    odd = torch.randn(41 * 8 + 1)[1:].view(41, 8)
    src = torch.randn(3, 16)[:, ::2]  # not contiguous
    places = torch.tensor([0, 5, 39])
    for d in (dst, odd):
        want = d.clone().index_copy_(0, places, src)
        assert torch.equal(copy_rows(d, places, src), want)
