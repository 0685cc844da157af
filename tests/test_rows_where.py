"""`rows_where`: the boolean index `logits[where]`, read by one index_select over flattened places."""

import pytest
import torch

from unmask.sampling.select import flat_places, rows_where


def test_equals_the_boolean_index_in_row_major_order():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=g)
    where = torch.rand(3, 7, generator=g) < 0.4
    assert torch.equal(rows_where(logits, where), logits[where])


def test_non_contiguous_logits_and_an_empty_mask():
    logits = torch.randn(7, 3, 5).transpose(0, 1)  # [3, 7, 5], not contiguous
    where = torch.zeros(3, 7, dtype=torch.bool)
    where[2, 6] = where[0, 1] = True
    assert torch.equal(rows_where(logits, where), torch.stack([logits[0, 1], logits[2, 6]]))
    assert rows_where(logits, torch.zeros_like(where)).shape == (0, 5)


def test_given_flat_places_read_the_same_rows_and_one_of_the_two_is_required():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 4, generator=g)
    where = torch.rand(2, 6, generator=g) < 0.5
    places = flat_places(where)
    assert places.tolist() == [6 * b + i for b, i in where.nonzero().tolist()]
    assert torch.equal(rows_where(logits, places=places), logits[where])
    for bad in ({}, {"where": where, "places": places}):
        with pytest.raises(ValueError, match="either `where`"):
            rows_where(logits, **bad)
