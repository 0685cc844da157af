"""Tokenizers users train or bring: `unmask tokenizer train SOURCE --out tokenizer.json` trains a BPE
or WordPiece tokenizer (Hugging Face `tokenizers`, the `text` extra) on the documents that
`data.source` would read (files, folders, globs, JSON Lines, Parquet, `datasets` folders:
`user_text.read_documents`), and `data.tokenizer=PATH` of the code recipes takes a `tokenizer.json`
or a Hugging Face model folder holding one.

Both kinds start with the code recipes' special tokens as ids 0..9 (`<|endoftext|>`, `<eos>`,
`<mask:0>`..`<mask:7>`: the start and end of a row and CM3's sentinels), which is what a tokenizer
must hold to serve them; a tokenizer without them is refused, naming the missing ones.
- `bpe`: byte-level BPE, as the recipes train their own: no normaliser, no prefix space, every byte
  in the alphabet, so decoding gives back the text exactly (at least 266 tokens);
- `wordpiece`: BERT's WordPiece (`##` continuations) after splitting at blanks and punctuation, with
  `[UNK]` as id 10 for characters never seen; decoding joins words with single spaces, so it does
  not give back code's layout.

    unmask tokenizer train corpus/ --out runs/tok.json --kind bpe --vocab-size 4096
    unmask train mlm-code data.source=corpus/ data.tokenizer=runs/tok.json data.vocab_size=4096
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnmaskError
from . import code
from .user_text import read_documents

KINDS = ("bpe", "wordpiece")
UNK = "[UNK]"


def tokenizer_file(path: str | Path) -> Path:
    """The `tokenizer.json` that `path` names: the file itself, or the one inside a model folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise UnmaskError(f"{path} is a folder without tokenizer.json; give a tokenizer.json or a "
                              "Hugging Face model folder that holds one")
        return path / "tokenizer.json"
    if not path.is_file():
        raise UnmaskError(f"data.tokenizer={str(path)!r}: no such file or folder; give a tokenizer.json")
    return path


def load_code_tokenizer(path: Path) -> code.CodeTokenizer:
    """A tokenizer.json as the code recipes use it: refused in one line when it is not a tokenizer
    file or lacks the special tokens at ids 0..9."""
    tk = code._need_tokenizers()
    try:
        tokenizer = tk.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        raise UnmaskError(f"{path} is not a tokenizer.json that `tokenizers` reads: {str(e).splitlines()[0]}") from None
    wrong = [f"{s} (id {i})" for i, s in enumerate(code.SPECIAL) if tokenizer.token_to_id(s) != i]
    if wrong:
        raise UnmaskError(f"{path} lacks the special tokens the code recipes need: {', '.join(wrong)}; train one "
                          "with `unmask tokenizer train`")
    return code.CodeTokenizer(tokenizer)


def train_tokenizer(texts: list[str], kind: str = "bpe", vocab_size: int = 8192):
    """A `tokenizers.Tokenizer` of `kind` trained on `texts`, with the code specials as ids 0..9."""
    if kind not in KINDS:
        raise UnmaskError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "bpe":
        try:
            return code.train_tokenizer(texts, vocab_size).tokenizer
        except ValueError as e:
            raise UnmaskError(f"--vocab-size: {e}") from None
    tk = code._need_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    least = len(code.SPECIAL) + 2
    if vocab_size < least:
        raise UnmaskError(f"--vocab-size must be at least {least} for WordPiece, got {vocab_size}")
    tok = tk.Tokenizer(models.WordPiece(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[*code.SPECIAL, UNK],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_from_source(source: str, out: Path, kind: str = "bpe", vocab_size: int = 8192,
                      column: str = "text") -> tuple[Path, int, int]:
    """Train on every document of `source` and write `out` (its folder made); returns (out, tokens in
    the vocabulary, documents read)."""
    text = read_documents(source, column)
    tokenizer = train_tokenizer([d.text for d in text.documents], kind, vocab_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tokenizer.save(str(tmp))
    tmp.replace(out)
    return out, tokenizer.get_vocab_size(), len(text.documents)
