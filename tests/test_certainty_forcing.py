"""dParallel's certainty-forcing distillation (Chen et al. 2025, arXiv:2509.26488, P8): the block
masks and the loss against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from host_syncs import assert_sync_budget
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives.certainty_forcing import CertaintyForcing

V, N = 5, 12


class Table(nn.Module):
    """A denoiser whose logits at place i are row i of a fixed table, whatever the input."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)
        self.mask_id = V
        self.inputs = []

    def forward(self, tokens, where):
        self.inputs.append(tokens.clone())
        return self.table.expand(tokens.shape[0], -1, -1)[where]


def prompt_of(lengths: list[int]) -> torch.Tensor:
    return torch.arange(N) < torch.tensor(lengths).unsqueeze(1)


def test_the_masks_split_one_block_exactly_and_hide_all_later_blocks():
    objective = CertaintyForcing(Table(torch.zeros(N, V)), block_length=4)
    prompt = prompt_of([3, 0, 8])  # answers of 9, 12 and 4 places: 3, 3 and 1 blocks
    blocks = {0: [(3, 7), (7, 11), (11, 12)], 1: [(0, 4), (4, 8), (8, 12)], 2: [(8, 12)]}
    seen = {row: set() for row in blocks}
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        first, second, later = objective.masks(prompt, g)
        assert not (first & second).any()
        for row, spans in blocks.items():
            chosen = (first[row] | second[row]).nonzero().flatten().tolist()
            (lo, hi), = [s for s in spans if s[0] == chosen[0]]
            assert chosen == list(range(lo, hi))  # one whole block, split between the two masks
            assert int(first[row].sum()) == round(0.5 * (hi - lo))
            assert later[row].nonzero().flatten().tolist() == list(range(hi, N))
            seen[row].add(lo)
    assert seen == {row: {lo for lo, _ in spans} for row, spans in blocks.items()}  # every block is drawn


def test_each_block_is_drawn_uniformly():
    objective = CertaintyForcing(Table(torch.zeros(N, V)), block_length=4)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(3)
    draws = 3000
    for _ in range(draws // 100):
        first, second, _ = objective.masks(prompt_of([0] * 100)[:, :N], g)
        starts = (first | second).float().argmax(1)
        counts += torch.bincount(starts // 4, minlength=3)
    assert (counts / draws - 1 / 3).abs().max() < 0.03  # 3 sd of a share of 1/3 over 3000 draws is 0.026


def test_the_loss_equals_the_hand_computed_terms():
    g = torch.Generator().manual_seed(2)
    table = torch.randn(N, V, generator=g, dtype=torch.float64).float()
    tokens = torch.randint(0, V, (1, N), generator=g)
    tokens[0, 4:8] = table[4:8].argmax(-1)  # block 1's tokens are what the table predicts: "correct"
    tokens[0, 5] = (table[5].argmax() + 1) % V  # except one
    model = Table(table)
    objective = CertaintyForcing(model, block_length=4, temperature=0.5, entropy_weight=2.0)
    prompt = prompt_of([0])
    first, second, later = objective.masks(prompt, torch.Generator().manual_seed(4))
    assert (first | second)[0, 4:8].all()  # the seed draws block 1, which holds a wrong prediction
    out = objective({"tokens": tokens, "prompt": prompt}, torch.Generator().manual_seed(4))

    def terms(hide):
        places = hide[0].nonzero().flatten().tolist()
        ce = sum(-torch.log_softmax(table[i].double(), 0)[tokens[0, i]] for i in places) / max(len(places), 1)
        right = [i for i in places if int(table[i].argmax()) == int(tokens[0, i])]
        p = torch.softmax(table.double() / 0.5, -1)
        h = sum(-(p[i] * p[i].log()).sum() for i in right) / max(len(right), 1)
        return ce, h

    (ce1, h1), (ce2, h2) = terms(first), terms(second)
    assert math.isclose(float(out.loss), float(ce1 + ce2 + 2 * (h1 + h2)), rel_tol=1e-5)
    # the inputs: block b's half and every later block hidden, everything else given
    for hide, seen in zip((first, second), model.inputs, strict=True):
        assert torch.equal(seen == V, hide | later)


def test_it_trains_with_one_host_read_per_logged_step_and_refuses_bad_settings():
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=16, depth=1, heads=2))
    objective = CertaintyForcing(model, block_length=4)
    with pytest.raises(ValueError, match="ratio"):
        CertaintyForcing(model, ratio=1.0)
    tokens = torch.randint(0, V, (8, N), generator=torch.Generator().manual_seed(4))
    data = {"tokens": tokens, "prompt": prompt_of([4] * 8)}
    assert_sync_budget(objective, data, steps=6, log_every=3)
