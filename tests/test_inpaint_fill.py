"""The digits recipe's inpainting fill (eval/digits.py): the expected grey level at a temperature, on
hand-built logits; the mask patterns averaged by the fill (every one hides the bottom half, the
further ones an exact count of top-half pixels, never the label); the average over them, on a stub
model whose answer is known; and the recipe's settings that choose the rule."""

import math

import pytest
import torch

from unmask.data import digits
from unmask.errors import UnmaskError
from unmask.eval.digits import FillRule, expected_level, fill_views, inpaint_canvas, posterior_fill


def logits_of(probs: dict[int, float]) -> torch.Tensor:
    """Float[17] log-probabilities with the given mass on the given levels (the rest ~ 0)."""
    out = torch.full((digits.LEVELS,), -1e4)
    for level, p in probs.items():
        out[level] = math.log(p)
    return out


def split(n: int = 5) -> digits.DigitsSplit:
    return digits.DigitsSplit(torch.arange(n * 64).view(n, 64) % digits.LEVELS, torch.arange(n) % digits.CLASSES)


def test_expected_level_by_hand_at_temperatures_one_two_and_near_zero():
    rows = torch.stack([logits_of({0: 0.5, 16: 0.5}), logits_of({2: 0.25, 4: 0.75}),
                        logits_of({0: 0.2, 16: 0.8}), logits_of({3: 0.3, 9: 0.7})])
    assert torch.allclose(expected_level(rows), torch.tensor([8.0, 3.5, 12.8, 7.2], dtype=torch.float64))
    # T = 2 takes square roots of the probabilities: 0.2 : 0.8 becomes 1 : 2, so 16 * 2/3
    assert expected_level(rows[2], 2.0).item() == pytest.approx(32 / 3)
    assert expected_level(rows[3], 0.5).item() == pytest.approx((3 * 0.09 + 9 * 0.49) / 0.58)
    assert expected_level(rows[1:], 1e-3).tolist() == pytest.approx([4.0, 16.0, 9.0])  # the argmax levels
    flat = torch.zeros(2, 3, digits.LEVELS)
    assert torch.allclose(expected_level(flat, 0.3), torch.full((2, 3), 8.0, dtype=torch.float64))
    assert expected_level(rows).dtype == torch.float64


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_expected_level_refuses_a_temperature_that_is_not_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        expected_level(torch.zeros(2, digits.LEVELS), temperature)


def test_fill_views_hide_the_bottom_half_always_and_an_exact_count_of_the_top_half_after_the_first():
    data = split(6)
    canvases = fill_views(data, 4, 0.3, torch.Generator().manual_seed(0)).view(4, 6, 65)
    assert torch.equal(canvases[0], inpaint_canvas(data))
    assert (canvases[:, :, 1 + 32 :] == digits.MASK_ID).all()
    assert torch.equal(canvases[:, :, 0], data.tokens[:, 0].expand(4, 6))  # the label stays given
    top = canvases[:, :, 1 : 1 + 32]
    hidden = top == digits.MASK_ID
    assert hidden[0].sum() == 0 and (hidden[1:].sum(-1) == round(0.3 * 32)).all()
    assert torch.equal(top[~hidden], data.tokens[:, 1 : 1 + 32].expand(4, 6, 32)[~hidden])
    assert not torch.equal(hidden[1], hidden[2])  # each view its own pattern
    again = fill_views(data, 4, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again.view(4, 6, 65), canvases)
    assert (fill_views(data, 2, 1.0)[6:, 1:] == digits.MASK_ID).all()


@pytest.mark.parametrize("views,top_hidden,needle", [(0, 0.5, "views must be >= 1"),
                                                     (2, 1.5, "top_hidden must be in"),
                                                     (2, -0.1, "top_hidden must be in")])
def test_fill_views_refuse_bad_settings(views, top_hidden, needle):
    with pytest.raises(ValueError, match=needle):
        fill_views(split(), views, top_hidden)


class CountingModel(torch.nn.Module):
    """Logits [M, 65, V] that put all the mass of every position on the level equal to the number of
    hidden top-half pixels of its row, so a fill's views can be told apart by their answer."""

    def forward(self, tokens):
        hidden = (tokens[:, 1 : 1 + 32] == digits.MASK_ID).sum(-1)  # Long[M]
        logits = torch.full((*tokens.shape, digits.VOCAB_SIZE), -1e4)
        logits[torch.arange(len(tokens)), :, hidden.clamp(max=digits.LEVELS - 1)] = 0.0
        return logits


def test_posterior_fill_averages_its_views_and_the_first_view_is_the_plain_fill():
    data = split(4)
    one = posterior_fill(CountingModel(), data)
    assert one.shape == (4, 32) and one.dtype == torch.float64 and (one == 0).all()
    # view 0 hides no top pixel (answer 0); views 1 and 2 hide round(0.25 * 32) = 8 each
    three = posterior_fill(CountingModel(), data, views=3, top_hidden=0.25, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(three, torch.full((4, 32), 16 / 3, dtype=torch.float64))
    batched = posterior_fill(CountingModel(), data, views=3, top_hidden=0.25,
                             generator=torch.Generator().manual_seed(1), batch=5)
    assert torch.equal(batched, three)


def test_fill_rule_scores_against_the_truth_and_keeps_the_one_view_fill_beside_it():
    data = split(3)
    truth = data.images[:, 32:].double()
    scored = FillRule(views=3, top_hidden=0.25).score(CountingModel(), data)
    assert scored["inpaint_mse"] == pytest.approx(((16 / 3 - truth) ** 2).mean().item())
    assert scored["inpaint_mse_one_view"] == pytest.approx((truth ** 2).mean().item())
    torch.manual_seed(0)
    from unmask.nn import MaskedTokenModel, ModelConfig

    model = MaskedTokenModel(ModelConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=16, depth=1, heads=2,
                                         segment_vocab=digits.SEGMENT_VOCAB)).eval()
    with torch.no_grad():  # the rule before views: one call, softmax over the 17 levels, expected value
        probs = torch.softmax(model(inpaint_canvas(data))[:, 33:, : digits.LEVELS].double(), -1)
    old = (((probs * torch.arange(17).double()).sum(-1) - truth) ** 2).mean().item()
    plain = FillRule().score(model, data)
    assert plain["inpaint_mse"] == pytest.approx(old) and plain["inpaint_mse_one_view"] == pytest.approx(old)


def test_digits_recipe_fill_settings_reach_the_rule_and_bad_ones_are_refused():
    from unmask.recipes import get

    recipe = get("digits")().with_overrides(["eval.fill_views=3", "eval.fill_top_hidden=0.25",
                                             "eval.fill_temperature=0.8"])
    assert recipe.settings.eval.fill() == FillRule(temperature=0.8, views=3, top_hidden=0.25)
    for bad, needle in (("eval.fill_temperature=0", "eval.fill_temperature=0.0 is out of range"),
                        ("eval.fill_views=0", "eval.fill_views=0 is out of range"),
                        ("eval.fill_top_hidden=2", "eval.fill_top_hidden=2.0 is out of range")):
        with pytest.raises(UnmaskError, match=needle):
            get("digits")().with_overrides([bad])
