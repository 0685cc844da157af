"""`mlm-code` as a Hugging Face `BertForMaskedLM` folder with its fast tokenizer, loadable with
`AutoModelForMaskedLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`.

Only `model.arch=bert` (`nn/bert.py`, BERT's own layout) has an exact Hugging Face form. The default
pre-norm network has none: every BERT-family masked LM in `transformers` puts a LayerNorm after the
embeddings or a transform (dense, GELU, LayerNorm) before the decoder, which ours lacks (and
ModernBERT has rotary positions and gated MLPs), so it is refused rather than approximated.

Ids: our data id i is the model's id i, our mask id V is the model's `<|mask|>`, id V (`nn/hf_bert.py`).
The folder's `tokenizer.json` is the run's own (V tokens, so `data.tokenizer=OUT` gives a new run the
same ids); `tokenizer_config.json` declares `<|mask|>` as the mask token, which `transformers` appends
on loading as id V. `export.json` records the mapping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..data.code import SPECIAL
from ..errors import UnmaskError
from ..nn.bert import BertMaskedModel
from ..nn.hf_bert import MASK_BIAS, bert_config_kwargs, to_bert_state_dict
from ..nn.hf_folder import need_transformers

MASK_TOKEN = "<|mask|>"
TIED = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # filled by tying, not loaded


def check(loaded) -> None:
    if not isinstance(getattr(loaded.objective, "model", None), BertMaskedModel):
        raise UnmaskError("this mlm-code run (model.arch=prenorm) has no exact Hugging Face form: every BERT-family "
                          "masked LM adds an embedding LayerNorm or a head transform; train with model.arch=bert, "
                          "or export --to unmask")
    if not loaded.run.has("tokenizer.json"):
        raise UnmaskError(f"{loaded.run.folder}/tokenizer.json is missing; the run folder is incomplete")


def write(loaded, folder: Path) -> None:
    tf = need_transformers()
    model: BertMaskedModel = loaded.objective.model
    v = model.config.vocab_size
    bert = tf.BertForMaskedLM(tf.BertConfig(**bert_config_kwargs(model.config)))
    missing, unexpected = bert.load_state_dict(to_bert_state_dict(model), strict=False)
    if unexpected or set(missing) - TIED:
        raise RuntimeError(f"BERT weights do not map: missing {missing}, unexpected {unexpected}")
    bert.save_pretrained(folder)
    write_tokenizer(loaded.run.folder / "tokenizer.json", v, model.config.layout.n, folder)
    record = {"recipe": loaded.recipe.name, "run": str(loaded.run.folder), "step": loaded.run.trained_step(),
              "architecture": "BertForMaskedLM", "data_ids": [0, v], "mask_id": v, "mask_token": MASK_TOKEN,
              "mask_token_id": v, "model_vocab_size": v + 1, "mask_logit_bias": MASK_BIAS}
    (folder / "export.json").write_text(json.dumps(record, indent=2))


def write_tokenizer(source: Path, vocab_size: int, length: int, folder: Path) -> None:
    """A fast tokenizer around the run's tokenizer.json, its mask token `<|mask|>` at id V."""
    tf = need_transformers()
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(source))
    if backend.get_vocab_size() != vocab_size or backend.token_to_id(MASK_TOKEN) is not None:
        raise UnmaskError(f"{source} holds {backend.get_vocab_size()} tokens; the model reads {vocab_size}")
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=backend, mask_token=MASK_TOKEN, pad_token=SPECIAL[0],
                                      eos_token="<eos>", model_max_length=length, clean_up_tokenization_spaces=False)
    if fast.mask_token_id != vocab_size:
        raise RuntimeError(f"the mask token took id {fast.mask_token_id}, not {vocab_size}")
    fast.save_pretrained(folder)
    shutil.copyfile(source, folder / "tokenizer.json")  # the run's own: V tokens, the mask added on loading
