"""Our MAE and Hugging Face's ViTMAEForPreTraining compute the same loss for the same weights and the
same hidden patches (skipped without transformers)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unmask.nn.mae import MAEConfig, MaskedAutoencoder  # noqa: E402
from unmask.nn.vitmae import to_vitmae_state_dict, vitmae_config_kwargs  # noqa: E402
from unmask.objectives.mae import MaskedAutoencoding  # noqa: E402

CFG = MAEConfig(image_size=(16, 16), channels=3, patch=4, dim=48, depth=2, heads=3, decoder_dim=32,
                decoder_depth=2, decoder_heads=4, cls_token=True)


def pair(norm_pix: bool):
    torch.manual_seed(0)
    ours = MaskedAutoencoding(MaskedAutoencoder(CFG), ratio=0.75, norm_pix=norm_pix)
    config = transformers.ViTMAEConfig(**vitmae_config_kwargs(CFG, mask_ratio=0.75, norm_pix=norm_pix))
    theirs = transformers.ViTMAEForPreTraining(config)
    theirs.load_state_dict(to_vitmae_state_dict(ours.model), strict=True)
    return ours.eval(), theirs.eval()


def noise_for(mask: torch.Tensor, generator) -> torch.Tensor:
    """ViTMAE keeps the patches of smallest noise: visible patches get noise in [0, 0.5), hidden ones
    in [1, 1.5), so ViTMAE hides exactly our hidden patches."""
    return mask.float() + 0.5 * torch.rand(mask.shape, generator=generator)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_same_loss_same_mask_same_weights(norm_pix):
    ours, theirs = pair(norm_pix)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 16, 16, generator=g)
    mask = ours.draw_mask(5, g)
    out = theirs(pixel_values=x, noise=noise_for(mask, g))
    assert torch.equal(out.mask.bool(), mask)
    loss, errors, pred = ours.reconstruction(x, mask)
    assert loss.item() == pytest.approx(out.loss.item(), rel=1e-5, abs=1e-6)
    # their logits at our hidden places, in our order, equal our predictions
    hidden = pred.encoded.index.ids_hidden
    theirs_hidden = out.logits.gather(1, hidden[..., None].expand(-1, -1, out.logits.shape[-1]))
    assert torch.allclose(theirs_hidden, pred.pred, atol=1e-5)


def test_same_gradients():
    ours, theirs = pair(True)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 16, 16, generator=g)
    mask = ours.draw_mask(3, g)
    ours.reconstruction(x, mask)[0].backward()
    theirs(pixel_values=x, noise=noise_for(mask, g)).loss.backward()
    a = ours.model.encoder.transformer.blocks[0].mlp[0].weight.grad
    b = theirs.vit.layers[0].mlp.fc1.weight.grad
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
