"""Follow the Flow (P25): conditioning on a subset of encoded tokens keeps exactly those tokens; the
removed ones cannot reach the output (zero gradient, bit-equal output under any change)."""

import pytest
import torch

from unmask.eval.token_flow import decode_subset, flow_shares, keep_items, keep_last, subset_attention_mask
from unmask.nn.transformer import Transformer

ITEMS = torch.tensor([[0, 1, 1, 1, -1, 2, 2, -1, -1],
                      [0, 1, 1, -1, -1, 2, 2, 2, 2]])


def setup():
    torch.manual_seed(0)
    net = Transformer(16, depth=3, heads=2).eval()
    memory = torch.randn(2, 9, 16, requires_grad=True)
    queries = torch.randn(2, 4, 16)
    return net, memory, queries


def test_mask_by_hand():
    keep = torch.tensor([[True, False, True]])
    m = subset_attention_mask(keep, 2)[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0],
                 [0, 1, 0, 0, 0],
                 [0, 0, 1, 0, 0],
                 [1, 0, 1, 1, 1],
                 [1, 0, 1, 1, 1]]


@pytest.mark.parametrize("kept", [[], [1], [2], [1, 2]])
def test_removed_tokens_get_zero_gradient_and_kept_ones_do_not(kept):
    net, memory, queries = setup()
    keep = keep_items(ITEMS, kept)
    decode_subset(net, memory, queries, keep).square().sum().backward()
    grad = memory.grad.norm(dim=-1)  # [B, M]
    assert bool((grad[~keep] == 0).all())
    assert bool((grad[keep] > 0).all())


def test_changing_removed_tokens_leaves_the_output_bit_equal():
    net, memory, queries = setup()
    keep = keep_items(ITEMS, [1])
    with torch.no_grad():
        out = decode_subset(net, memory, queries, keep)
        other = torch.where(keep.unsqueeze(-1), memory, 100 * torch.randn_like(memory))
        assert torch.equal(decode_subset(net, other, queries, keep), out)
        # and the kept ones do matter
        moved = torch.where(keep.unsqueeze(-1), memory + 1.0, memory)
        assert not torch.allclose(decode_subset(net, moved, queries, keep), out)


def test_subset_equals_the_decoder_on_the_kept_tokens_alone():
    """Removing tokens by the mask = never giving them: the same outputs as the decoder run on the
    kept condition tokens only (per row, as the counts differ)."""
    net, memory, queries = setup()
    keep = keep_items(ITEMS, [2])
    with torch.no_grad():
        out = decode_subset(net, memory, queries, keep)
        for row in range(2):
            kept = memory[row : row + 1, keep[row]]
            alone = decode_subset(net, kept, queries[row : row + 1], torch.ones(1, kept.shape[1], dtype=torch.bool))
            torch.testing.assert_close(out[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_keep_items_and_keep_last():
    assert keep_items(ITEMS, []).int().tolist() == [[1, 0, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert keep_items(ITEMS, [2]).int().tolist() == [[1, 0, 0, 0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 0, 1, 1, 1, 1]]
    assert keep_last(ITEMS, 1).int().tolist() == [[1, 0, 0, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0, 0]]
    full = keep_items(ITEMS, [1, 2])
    assert not bool(full[ITEMS == -1].any())  # padding is never kept


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        subset_attention_mask(torch.zeros(1, 3, dtype=torch.bool), 2)
    with pytest.raises(ValueError):
        keep_items(ITEMS, [0])


def test_flow_shares():
    s = flow_shares({"full": 0.8, "own": 0.6, "other": 0.3, "empty": 0.2})
    assert s == pytest.approx({"full": 1.0, "own": 2 / 3, "other": 1 / 6, "empty": 0.0})
    with pytest.raises(ValueError):
        flow_shares({"full": 0.2, "empty": 0.2})
