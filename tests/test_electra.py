"""ELECTRA (P36): replaced means drawn != original, loss = MLM + 50 BCE, no gradient through the draw."""

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.objectives import Electra

V = 13
LAYOUT = Layout.seq(24)


def electra(**kw):
    torch.manual_seed(0)
    return Electra(V, LAYOUT, dim=32, depth=2, heads=2, **kw)


def batch(b=8):
    return {"tokens": torch.randint(0, V, (b, LAYOUT.n), generator=torch.Generator().manual_seed(0))}


def replay(obj, data, seed):
    """The objective's draws redone by hand: (mask, generator inputs, fake tokens, generator)."""
    g = torch.Generator().manual_seed(seed)
    x = data["tokens"]
    mask = obj.masker(LAYOUT, x.shape[0], ratio=obj.ratio, generator=g)
    gen_inputs = obj.corruption(x, mask, V, g)
    return mask, gen_inputs, g


def test_generator_is_a_quarter_width_and_shares_embeddings():
    obj = electra()
    assert obj.generator.down.out_features == 8  # 32 / 4
    names = [n for n, _ in obj.named_parameters()]
    assert sum("tokens.weight" in n for n in names) == 1  # one token table, stored once
    loss_gen = obj.generator(batch()["tokens"], obj.discriminator.embed, torch.ones(8, 24, dtype=torch.bool))
    loss_gen.sum().backward()
    assert obj.discriminator.embed.tokens.weight.grad.abs().sum() > 0  # the generator trains the shared table


def test_total_loss_and_replaced_labels():
    obj = electra()
    data = batch()
    loss, metrics = obj(data, generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx((metrics["gen_loss"] + 50 * metrics["disc_loss"]).item(), rel=1e-5)
    mask, gen_inputs, g = replay(obj, data, 1)
    assert (mask.sum(1) == round(0.15 * 24)).all()
    logits = obj.generator(gen_inputs, obj.discriminator.embed, mask)
    from unmask.sampling import categorical

    fake = data["tokens"].clone()
    fake[mask] = categorical(logits, 1.0, g)
    replaced = fake != data["tokens"]
    bce = F.binary_cross_entropy_with_logits(obj.discriminator(fake), replaced.float())
    assert metrics["disc_loss"] == pytest.approx(bce.item(), rel=1e-5)
    assert metrics["replaced_share"] == pytest.approx(replaced.float().mean().item())
    assert replaced.sum() < mask.sum() or replaced.sum() == mask.sum()


def test_a_generator_that_copies_gives_no_replaced_tokens():
    """A draw equal to the original is labelled real: with a generator that always returns the
    original token, every label is 0."""
    obj = electra()
    data = batch()

    def copying(tokens, embed, where):
        return F.one_hot(data["tokens"][where], V).float() * 1e4

    obj.generator.forward = copying
    _, metrics = obj(data, generator=torch.Generator().manual_seed(2))
    assert metrics["replaced_share"] == 0.0


def test_discriminator_loss_sends_no_gradient_into_the_generator():
    """The generator's own parameters get the same gradient from the full loss as from its MLM loss
    alone: the discriminator's term reaches them only through the shared embeddings."""
    obj = electra()
    data = batch()
    obj.generator.bias.data.normal_()  # a generator that replaces often
    loss, metrics = obj(data, generator=torch.Generator().manual_seed(3))
    assert metrics["replaced_share"] > 0
    loss.backward()
    total = {n: p.grad.clone() for n, p in obj.generator.named_parameters()}
    obj.zero_grad()
    mask, gen_inputs, _ = replay(obj, data, 3)
    logits = obj.generator(gen_inputs, obj.discriminator.embed, mask)
    F.cross_entropy(logits, data["tokens"][mask]).backward()
    for n, p in obj.generator.named_parameters():
        assert torch.allclose(total[n], p.grad, atol=1e-6), n


def test_bad_settings():
    with pytest.raises(ValueError, match="ratio"):
        electra(ratio=0.0)
