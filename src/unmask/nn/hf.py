"""Hugging Face interop: any `transformers` masked LM as an unmask denoiser, and BERT weights copied
into `BertMaskedModel` (nothing here downloads; build the model from a config or pass your own).

Our convention: data ids 0..V-1, mask id V, logits over the V data ids only. A Hugging Face model has
its own vocabulary with the mask among it (and special tokens). `HFDenoiser` maps our id i to the
model's id `data_ids[i]` and our mask id V to the model's `mask_token_id`, runs the model, and returns
its logits at `data_ids`, so every sampler of `unmask.sampling` can use it and none can emit the mask
or an excluded special token.

    bert = BertForMaskedLM(BertConfig(vocab_size=100, ...))
    denoiser = HFDenoiser(bert, mask_token_id=4, exclude=(0, 1, 2, 3))   # V = 95 data ids
    out = generate(denoiser, canvas, MaskGITSampler(8), mask_id=denoiser.vocab_size)
"""

from __future__ import annotations

import torch
from torch import nn


class HFDenoiser(nn.Module):
    """tokens: Long[B, N] in 0..V (V = mask) -> logits Float[B, N, V] from `model(input_ids=...)`."""

    def __init__(self, model: nn.Module, mask_token_id: int, data_ids=None, exclude=()):
        super().__init__()
        size = model.get_input_embeddings().num_embeddings
        if not 0 <= mask_token_id < size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the model's {size} ids")
        if data_ids is None:
            banned = set(exclude) | {mask_token_id}
            data_ids = [i for i in range(size) if i not in banned]
        data_ids = torch.as_tensor(data_ids, dtype=torch.long)
        if data_ids.numel() == 0 or (data_ids == mask_token_id).any() or data_ids.unique().numel() != data_ids.numel():
            raise ValueError("data_ids must be distinct model ids, not empty, without the mask token")
        if data_ids.min() < 0 or data_ids.max() >= size:
            raise ValueError(f"data_ids must lie in 0..{size - 1}")
        self.model = model
        self.vocab_size = data_ids.numel()
        self.register_buffer("data_ids", data_ids, persistent=False)
        self.register_buffer("to_model", torch.cat([data_ids, data_ids.new_tensor([mask_token_id])]),
                             persistent=False)

    def model_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Our ids Long[B, N] (mask = V) -> the model's ids Long[B, N]."""
        if tokens.min() < 0 or tokens.max() > self.vocab_size:
            raise ValueError(f"token ids must lie in 0..{self.vocab_size} (the mask id)")
        return self.to_model[tokens]

    def forward(self, tokens: torch.Tensor, **condition) -> torch.Tensor:
        ids = self.model_inputs(tokens)
        logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), **condition).logits
        return logits[..., self.data_ids]


@torch.no_grad()
def copy_bert_weights(bert: nn.Module, ours: nn.Module, mask_token_id: int, data_ids) -> None:
    """Copy a `transformers.BertForMaskedLM` into a `BertMaskedModel` of the same shape.

    Our data id i takes the model's token `data_ids[i]`, our mask id V takes `mask_token_id`;
    token-type 0 is folded into the position embeddings. Dropout in `bert` should be off to compare.
    """
    data_ids = torch.as_tensor(data_ids, dtype=torch.long)
    emb, enc, head = bert.bert.embeddings, bert.bert.encoder, bert.cls.predictions
    rows = torch.cat([data_ids, data_ids.new_tensor([mask_token_id])])
    ours.embed.tokens.weight.copy_(emb.word_embeddings.weight[rows])
    n = ours.embed.pos.shape[1]
    ours.embed.pos.copy_((emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0]).unsqueeze(0))
    ours.embed_norm.load_state_dict(emb.LayerNorm.state_dict())
    if len(enc.layer) != len(ours.blocks):
        raise ValueError(f"BERT has {len(enc.layer)} layers, ours {len(ours.blocks)}")
    for layer, block in zip(enc.layer, ours.blocks, strict=True):
        att = layer.attention
        block.attn.qkv.weight.copy_(torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight]))
        block.attn.qkv.bias.copy_(torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias]))
        block.attn.proj.load_state_dict(att.output.dense.state_dict())
        block.norm1.load_state_dict(att.output.LayerNorm.state_dict())
        block.mlp[0].load_state_dict(layer.intermediate.dense.state_dict())
        block.mlp[2].load_state_dict(layer.output.dense.state_dict())
        block.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
    ours.transform[0].load_state_dict(head.transform.dense.state_dict())
    ours.transform[2].load_state_dict(head.transform.LayerNorm.state_dict())
    ours.bias.copy_(head.bias[data_ids] if head.bias is not None else head.decoder.bias[data_ids])
