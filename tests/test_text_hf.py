"""Any transformers masked LM as a denoiser for every sampler (nothing downloads)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unmask.nn.hf import HFDenoiser  # noqa: E402
from unmask.sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler, generate  # noqa: E402

SAMPLERS = [MaskGITSampler(steps=4), AncestralSampler(steps=6), FirstHittingSampler()]
MASK, SPECIAL = 4, (0, 1, 2, 3)


def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16)
    return transformers.BertForMaskedLM(cfg).eval()


def roberta():
    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=20, pad_token_id=1)
    return transformers.RobertaForMaskedLM(cfg).eval()


@pytest.mark.parametrize("build", [bert, roberta], ids=["bert", "roberta"])
def test_ids_are_mapped_and_logits_are_the_models(build):
    model = build()
    den = HFDenoiser(model, mask_token_id=MASK, exclude=SPECIAL)
    assert den.vocab_size == 35  # 40 ids less 4 specials less the mask
    x = torch.randint(0, 36, (2, 10), generator=torch.Generator().manual_seed(0))  # 35 = our mask id
    ids = den.model_inputs(x)
    assert (ids[x == 35] == MASK).all() and not torch.isin(ids[x < 35], torch.tensor(SPECIAL + (MASK,))).any()
    assert torch.equal(ids[x < 35], x[x < 35] + 5)  # data id i is model id i + 5
    with torch.no_grad():
        expected = model(input_ids=ids).logits[..., 5:]
        assert torch.allclose(den(x), expected, atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_every_sampler_runs_on_a_transformers_model(sampler):
    den = HFDenoiser(bert(), mask_token_id=MASK, exclude=SPECIAL)
    canvas = torch.randint(0, 35, (3, 12), generator=torch.Generator().manual_seed(1))
    canvas[:, 3:9] = 35
    out = generate(den, canvas, sampler, mask_id=35, generator=torch.Generator().manual_seed(2))
    assert (out.tokens < 35).all()  # no mask, no special token can come out
    assert torch.equal(out.tokens[:, :3], canvas[:, :3]) and torch.equal(out.tokens[:, 9:], canvas[:, 9:])
    assert out.nfe >= 1


def test_bad_ids_are_errors():
    with pytest.raises(ValueError, match="mask_token_id"):
        HFDenoiser(bert(), mask_token_id=99)
    with pytest.raises(ValueError, match="data_ids"):
        HFDenoiser(bert(), mask_token_id=MASK, data_ids=[5, 5, 6])
