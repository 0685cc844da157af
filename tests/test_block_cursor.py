"""The block cursor of LLaDA, threshold and RCR decoding (`sampling/blocks.py`): `advance` and
`filling_block` against the rule written out in full, on fill-only trajectories with prompts of
different lengths, given places inside later blocks and blocks skipped because nothing in them is
hidden; and the shared ids of a run's starts."""

import pytest
import torch

from unmask.sampling import blocks

FAR = torch.iinfo(torch.long).max


def rule(hidden, state, length):
    """The cursor by its definition: a row leaves its recorded block when nothing in it is hidden,
    for the first later block that has hidden places; on entry the block's hidden count is kept."""
    start = torch.tensor(state["start"])
    block, step, size = (torch.tensor(state[k]) for k in ("block", "step", "size"))
    ids = blocks.block_ids(start, hidden.shape[1], length)
    done = ~(hidden & (ids == block[:, None])).any(1)
    later = ids.masked_fill(~hidden, FAR).min(1).values
    moving = done & hidden.any(1)
    block = torch.where(moving, later, block)
    in_block = ids == block[:, None]
    step = torch.where(moving, 0, step)
    size = torch.where(moving, (hidden & in_block).sum(1), size)
    return block, step, size, in_block


class State:
    def __init__(self, d):
        self.__dict__.update(d)


@pytest.mark.parametrize("length", [None, 1, 3, 8])
def test_advance_and_filling_block_follow_the_rule_on_fill_only_trajectories(length):
    g = torch.Generator().manual_seed(0)
    b, n = 6, 29
    hidden = torch.ones(b, n, dtype=torch.bool)
    for r, prompt in enumerate([0, 1, 4, 7, 12, 28]):
        hidden[r, :prompt] = False
    hidden &= torch.rand(b, n, generator=g) > 0.25  # given places among the hidden ones
    hidden[2, 9:20] = False  # whole blocks with nothing hidden, to be skipped
    state = blocks.start_cursor(hidden, length)
    moved = 0
    for _ in range(200):
        want_block, want_step, want_size, want_in = rule(hidden, state, length)
        cur, in_block = blocks.advance(hidden, State(state), length)
        assert torch.equal(cur.block, want_block) and torch.equal(cur.step, want_step)
        assert torch.equal(cur.size, want_size) and torch.equal(in_block, want_in)
        assert torch.equal(blocks.filling_block(hidden, State(state), length), want_block)
        moved += int((want_block != torch.tensor(state["block"])).sum())
        if not hidden.any():
            break
        # fill a random part of each row's current block (sometimes nothing), as a sampler would
        fill = hidden & in_block & (torch.rand(b, n, generator=g) < 0.3)
        hidden = hidden & ~fill
        cur.step = cur.step + 1
        state = cur.lists()
    assert not hidden.any()  # the trajectories finished
    assert moved > b if length else moved == 0  # and crossed blocks where there are several
    # a finished row keeps its last block
    done = blocks.advance(hidden, State(state), length)[0]
    assert done.block.tolist() == state["block"]


def test_a_spent_block_with_places_left_restarts_its_count():
    """With steps per block (RCR), a spent block is left for the first block with hidden places; when
    that is the same block (RCR hid a place again), its step count and size restart."""
    hidden = torch.tensor([[False, True, False, False, True, True]])
    state = State({"start": [0], "block": [0], "step": [2], "size": [2]})
    cur, in_block = blocks.advance(hidden, state, 3, torch.tensor([2]))
    assert (cur.block.tolist(), cur.step.tolist(), cur.size.tolist()) == ([0], [0], [1])
    assert in_block.tolist() == [[True, True, True, False, False, False]]
    cur, _ = blocks.advance(hidden, state, 3, torch.tensor([3]))  # steps not spent: stays, counts kept
    assert (cur.block.tolist(), cur.step.tolist(), cur.size.tolist()) == ([0], [2], [2])


def test_state_block_ids_equal_block_ids_and_are_shared_per_run():
    start = [0, 3, 5]
    ids = blocks.state_block_ids(start, 11, 4, "cpu")
    assert torch.equal(ids, blocks.block_ids(torch.tensor(start), 11, 4))
    assert ids[1].tolist() == [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1]
    assert blocks.state_block_ids(list(start), 11, 4, torch.device("cpu")) is ids  # one tensor per run
    for starts, n, length in (([0, 3, 6], 11, 4), (start, 12, 4), (start, 11, 3), (start, 11, None)):
        other = blocks.state_block_ids(starts, n, length, "cpu")
        assert other is not ids and torch.equal(other, blocks.block_ids(torch.tensor(starts), n, length))
