"""Our MLM and transformers' BertForMaskedLM do the same computation: with BERT's weights copied
across and the same mask and inputs, the losses and the gradients agree (benchmarks/mlm_vs_transformers.py
times them)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unmask.layout import Layout  # noqa: E402
from unmask.masking import BertCorruption, RandomMask  # noqa: E402
from unmask.nn.bert import BertConfig, BertMaskedModel  # noqa: E402
from unmask.nn.hf import copy_bert_weights  # noqa: E402
from unmask.objectives import MaskedTokenModeling  # noqa: E402

HF_VOCAB, HF_MASK, N = 60, 4, 24
DATA_IDS = torch.tensor([i for i in range(HF_VOCAB) if i != HF_MASK])  # our id i = HF id DATA_IDS[i]
V = len(DATA_IDS)


def pair(prune=True):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=HF_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=N, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    bert = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():
        bert.cls.predictions.bias.normal_()  # non-zero biases, so the copy is checked
    ours = BertMaskedModel(BertConfig(V, Layout.seq(N), dim=32, depth=2, heads=4, mlp_ratio=2.0, prune_last=prune))
    copy_bert_weights(bert, ours, HF_MASK, DATA_IDS)
    return bert, ours


@pytest.mark.parametrize("prune", [True, False], ids=["pruned-last-block", "full"])
def test_same_weights_same_mask_same_loss_and_gradients(prune):
    bert, ours = pair(prune)
    objective = MaskedTokenModeling(ours, RandomMask(), ratio=0.15, corruption=BertCorruption())
    x = torch.randint(0, V, (8, N), generator=torch.Generator().manual_seed(1))
    loss = objective({"tokens": x}, generator=torch.Generator().manual_seed(2)).loss
    # the same draws, handed to BERT in its own ids
    g = torch.Generator().manual_seed(2)
    ratio = torch.full((8,), 0.15, dtype=torch.float64)
    mask = RandomMask()(ours.config.layout, 8, ratio=ratio, generator=g)
    inputs = BertCorruption()(x, mask, V, g)
    to_hf = torch.cat([DATA_IDS, torch.tensor([HF_MASK])])
    labels = torch.where(mask, DATA_IDS[x], torch.full_like(x, -100))
    with torch.no_grad():
        bert.cls.predictions.bias[HF_MASK] = -1e4  # BERT's softmax also covers [MASK]; ours cannot emit it
    hf_loss = bert(input_ids=to_hf[inputs], labels=labels).loss
    assert hf_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    hf_loss.backward()
    q = bert.bert.encoder.layer[0].attention.self.query.weight.grad
    assert torch.allclose(ours.blocks[0].attn.qkv.weight.grad[:32], q, atol=1e-6)
    d = bert.bert.encoder.layer[1].output.dense.weight.grad
    assert torch.allclose(ours.blocks[1].mlp[2].weight.grad, d, atol=1e-6)


def test_collator_counts_vary_ours_are_exact():
    """transformers' collator hides Binomial(n, 0.15) tokens per row; our masker hides round(0.15 n)."""
    from tokenizers import Tokenizer, models

    words = {f"w{i}": i for i in range(HF_VOCAB)}
    words["[MASK]"] = words.pop(f"w{HF_MASK}")
    words["[PAD]"] = words.pop("w0")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="[PAD]")),
                                               mask_token="[MASK]", pad_token="[PAD]")
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=0)
    x = torch.randint(5, HF_VOCAB, (200, 100), generator=torch.Generator().manual_seed(3))
    batch = collator([{"input_ids": r, "special_tokens_mask": torch.zeros_like(r)} for r in x])
    hf_counts = (batch["labels"] != -100).sum(1)
    assert hf_counts.unique().numel() > 5 and abs(hf_counts.float().mean().item() - 15) < 1.5
    ours = RandomMask()(Layout.seq(100), 200, ratio=0.15, generator=torch.Generator().manual_seed(4)).sum(1)
    assert (ours == 15).all()
