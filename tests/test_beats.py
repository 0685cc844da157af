"""BEATs / OpenBEATs: frozen random-projection labels, masked-only loss, exact mask count, the
distillation cosine, and round-2 targets coming from the distilled tokenizer."""

import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking.random import RandomMask
from unmask.nn.acoustic_labels import DistilledTokenizer, RandomProjectionTokenizer, distillation_loss, patches
from unmask.objectives.beats import BEATs, Distillation


def small(tokenizer=None, seed=0) -> BEATs:
    torch.manual_seed(seed)
    return BEATs(tokenizer or RandomProjectionTokenizer(40, 16, 8, seed=3), 16, 40, dim=16, depth=1, heads=2,
                 max_patches=8)


def mel(b=4, t=16, seed=0):
    return torch.randn(b, t, 40, generator=torch.Generator().manual_seed(seed))


def test_patches_put_frame_pairs_side_by_side():
    x = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    p = patches(x)
    assert p.shape == (2, 3, 6)
    assert torch.equal(p[1, 1], torch.cat([x[1, 2], x[1, 3]]))
    assert torch.equal(p[0, 2], torch.cat([x[0, 4], x[0, 4]]))  # the short last patch repeats its frame


def test_random_projection_tokenizer_is_seeded_and_frozen():
    a, b, c = (RandomProjectionTokenizer(40, 16, 8, seed=s) for s in (3, 3, 4))
    assert list(a.parameters()) == []
    x = mel()
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    model = small()
    before = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model({"mel": x}, torch.Generator().manual_seed(0)).loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.tokenizer.state_dict().items())
    assert all(p.grad is None for p in model.tokenizer.parameters())


def test_random_projection_tokenizer_takes_the_nearest_code_by_cosine():
    tok = RandomProjectionTokenizer(40, 5, 4, seed=0)
    x = mel(2, 6)
    p = patches(x)  # [2, 3, 80]
    labels = tok(x)
    for b in range(2):
        for n in range(3):
            v = p[b, n]
            z = ((v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)) @ tok.projection
            cos = [float(F.cosine_similarity(z, tok.codebook[k], dim=0)) for k in range(5)]
            assert labels[b, n] == max(range(5), key=cos.__getitem__)


def test_mask_count_is_exact_and_loss_reads_only_hidden_patches():
    class Fixed(torch.nn.Module):
        def __init__(self, ids):
            super().__init__()
            self.ids = ids

        def forward(self, mel):
            return self.ids

    x = mel(3, 16)  # 8 patches: 6 hidden
    ids = torch.randint(16, (3, 8), generator=torch.Generator().manual_seed(1))
    model = small(Fixed(ids))
    out = model({"mel": x}, torch.Generator().manual_seed(5))
    assert float(out.metrics["masked"]) == 0.75
    mask = RandomMask()(Layout.seq(8), 3, ratio=0.75, generator=torch.Generator().manual_seed(5))
    assert mask.sum(1).tolist() == [6, 6, 6]
    changed = ids.clone()
    changed[~mask] = (changed[~mask] + 1) % 16  # every visible patch's target changes
    same = small(Fixed(changed))({"mel": x}, torch.Generator().manual_seed(5))
    assert torch.equal(out.loss, same.loss)
    changed[0, mask[0].nonzero()[0, 0]] += 1  # one hidden patch's target changes
    assert not torch.equal(out.loss, small(Fixed(changed % 16))({"mel": x}, torch.Generator().manual_seed(5)).loss)


def test_distillation_loss_is_one_minus_cosine_at_valid_places():
    estimate = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [-1.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    expected = ((1 - 0.0) + (1 - 2 ** -0.5)) / 2
    assert abs(float(distillation_loss(estimate, teacher, valid)) - expected) < 1e-6


def test_distillation_objective_uses_the_frozen_teacher():
    teacher = small()
    tok = DistilledTokenizer(40, 16, 1, 2, 16, 4, teacher_dim=16, max_patches=8)
    d = Distillation(tok, teacher)
    x = mel()
    out = d({"mel": x})
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    q = tok.quantize(x)
    expect = distillation_loss(tok.estimate(q.quantized), teacher.features(x), torch.ones(4, 8, dtype=torch.bool))
    assert abs(float(out.metrics["cosine"]) - (1 - float(expect.detach()))) < 1e-5


def test_round_two_targets_come_from_the_distilled_tokenizer():
    torch.manual_seed(0)
    a = DistilledTokenizer(40, 16, 1, 2, 16, 4, teacher_dim=16, max_patches=8, seed=0)
    torch.manual_seed(1)
    b = DistilledTokenizer(40, 16, 1, 2, 16, 4, teacher_dim=16, max_patches=8, seed=1)
    for t in (a, b):  # a data-dependent codebook, as the first training pass would draw
        t.train()
        t.quantize(mel(8, 16, seed=7), torch.Generator().manual_seed(0))
    x = mel()
    ra, rb = small(a), small(b)
    assert torch.equal(ra.targets(x), a.eval()(x))
    assert not torch.equal(ra.targets(x), rb.targets(x))
    rb.tokenizer.load_state_dict(a.state_dict())  # swapping in a's weights gives a's targets
    assert torch.equal(rb.targets(x), ra.targets(x))
