"""Token shards (`data/shards.py`) and the windows read from them (`data/windows.py`), at small size: a
corpus of about 300 KB of standard-library files prepared with a 300-token BPE.

Every token of every file is in the shards, in order, each file followed by the separator; the dtype
follows the vocabulary (uint16 up to 65,536 tokens); a window is the slice of the concatenated stream
computed here from the files directly; a damaged set is a one-line error; ranks and workers read
disjoint windows that together are what one process reads; the loader reads ahead exactly what the
trainer asks for and gives what the windows give; `unmask train mlm-code data.source=SHARDS`
resumes to the same weights as an unbroken run; and the epoch order the trainer now keeps is the one
it drew at every step before."""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")

from conftest import TINY  # noqa: E402
from unmask.data import code, shards  # noqa: E402
from unmask.data.windows import ShardWindows, WindowLoader, worker_share  # noqa: E402
from unmask.layout import Layout  # noqa: E402
from unmask.nn import MaskedTokenModel, ModelConfig  # noqa: E402
from unmask.objectives import MaskedTokenModeling  # noqa: E402
from unmask.recipes.code_base import step_rows  # noqa: E402
from unmask.train import TrainConfig, Trainer  # noqa: E402
from unmask.train.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CORPUS_BYTES = 300_000
SHARD_MB = 0.05  # 26,214 uint16 tokens a shard: a few dozen shards, windows that cross from one to the next
SHARE = 0.2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 300 KB of standard-library files in their packages' folders, plus a file that is not
    UTF-8 and an empty one (both skipped)."""
    root, folder = code.stdlib_root(), tmp_path_factory.mktemp("corpus") / "src"
    size = 0
    for rel in code.stdlib_files(max_file_bytes=30_000):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, folder / rel)
        size += (folder / rel).stat().st_size
        if size >= CORPUS_BYTES:
            break
    (folder / "notes").mkdir()
    (folder / "notes" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "notes" / "empty.txt").write_text("")
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    texts = [(code.stdlib_root() / f).read_text() for f in ("textwrap.py", "shlex.py", "glob.py")]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    code.train_tokenizer(texts, 300).save(path)
    return path


@pytest.fixture(scope="module")
def prepared(corpus, tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sets") / "shards"
    shards.prepare(corpus, tokenizer, out, shard_mb=SHARD_MB, test_share=SHARE, progress=False)
    return out


def expected_streams(corpus: Path, tokenizer: Path) -> dict[str, np.ndarray]:
    """Each split's token stream computed from the files directly: sorted paths, the split by the
    path's hash, each file's ids then the separator id 0 (`<|endoftext|>`)."""
    tok = code.CodeTokenizer.load(tokenizer)
    streams = {"train": [], "test": []}
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text:
            split = code.split_of(path.relative_to(corpus), SHARE)
            streams[split] += [*tok.encode(text), 0]
    return {k: np.array(v) for k, v in streams.items()}


def read_stream(folder: Path, split: str) -> np.ndarray:
    found = shards.open_shards(folder)
    return np.concatenate([np.fromfile(s.path, dtype=found.dtype) for s in found.splits[split]])


def one_line(ran) -> str:
    assert ran.code == 2 and ran.err.count("\n") == 1 and ran.err.startswith("unmask: error: "), ran
    return ran.err


# preparing -----------------------------------------------------------------------------------------
def test_the_shards_hold_every_token_of_every_file_in_order(prepared, corpus, tokenizer):
    want = expected_streams(corpus, tokenizer)
    index = json.loads((prepared / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["vocab_size"] == 300 and index["separator_id"] == 0
    assert index["skipped"] == {"empty file": {"count": 1, "examples": [str(corpus / "notes" / "empty.txt")]},
                                "not UTF-8 text": {"count": 1, "examples": [str(corpus / "notes" / "latin1.txt")]}}
    for split in ("train", "test"):
        assert len(want[split]) > 1000, split  # both splits hold documents
        assert np.array_equal(read_stream(prepared, split), want[split]), split
        entry = index["splits"][split]
        assert entry["tokens"] == len(want[split]) == sum(s["tokens"] for s in entry["shards"])
        assert entry["documents"] == (want[split] == 0).sum()
        limit = int(SHARD_MB * 2**20) // 2
        assert all(s["tokens"] == limit for s in entry["shards"][:-1]) and entry["shards"][-1]["tokens"] <= limit
    assert index["total_tokens"] == len(want["train"]) + len(want["test"])
    assert index["tokenizer_sha256"] == shards.file_digest(tokenizer)
    assert (prepared / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    shards.verify(prepared)


def word_tokenizer(folder: Path, vocab_size: int) -> Path:
    """A word-level tokenizer of `vocab_size` tokens: `<|endoftext|>`, then the words w1, w2, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = folder / f"words{vocab_size}.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize(("vocab_size", "dtype"), [(65_536, "uint16"), (65_537, "uint32")])
def test_the_dtype_is_uint16_up_to_65536_tokens_then_uint32(vocab_size, dtype, tmp_path):
    assert shards.token_dtype(vocab_size) == np.dtype(dtype)
    top = vocab_size - 1  # 65,535 fits in uint16; 65,536 does not
    (tmp_path / "a.txt").write_text(f"w1 w{top} w2")
    (tmp_path / "b.txt").write_text(f"w{top - 1} w{top}")
    out = tmp_path / "shards"
    shards.prepare(tmp_path / "*.txt", word_tokenizer(tmp_path, vocab_size), out, test_share=0, progress=False)
    assert json.loads((out / "index.json").read_text())["dtype"] == dtype
    assert (out / "train_00000.bin").stat().st_size == 7 * np.dtype(dtype).itemsize
    assert read_stream(out, "train").tolist() == [1, top, 2, 0, top - 1, top, 0]


def test_when_no_file_hashes_into_the_held_out_share_the_lowest_one_is_held_out(tmp_path, cli):
    tok = word_tokenizer(tmp_path, 300)
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(f"w{ord(name[0])} w1")
    found = shards.prepare(folder, tok, tmp_path / "s", test_share=1e-9, progress=False)["splits"]
    lowest = min(("a.txt", "b.txt", "c.txt"), key=lambda n: hashlib.sha1(n.encode()).digest())
    assert (found["train"]["documents"], found["test"]["documents"]) == (2, 1)
    assert read_stream(tmp_path / "s", "test").tolist() == [ord(lowest[0]), 1, 0]
    err = one_line(cli("prepare", folder / "a.txt", "--tokenizer", tok, "--out", tmp_path / "one", "--no-progress"))
    assert "1 file cannot be split" in err and not (tmp_path / "one").exists()


# reading by window -----------------------------------------------------------------------------------
def test_windows_are_slices_of_the_concatenated_stream(prepared, corpus, tokenizer):
    stream = expected_streams(corpus, tokenizer)["train"]
    length = 100  # shards of 26,214 tokens: some windows run from one shard into the next
    windows = ShardWindows.open(prepared, "train", length, remap_bytes=1 << 20)
    assert len(windows) == len(stream) // length
    bounds = windows.bounds[1:-1]
    crossing = [int(b) // length for b in bounds if b % length]
    rows = torch.cat([torch.tensor(crossing), torch.randperm(len(windows), generator=torch.Generator().manual_seed(0)),
                      torch.tensor([0, len(windows) - 1])])
    assert len(crossing) > 5
    for part in rows.split(37):
        want = np.stack([stream[r * length : (r + 1) * length] for r in part.tolist()])
        assert torch.equal(windows[part], torch.from_numpy(want)), part
        assert len(windows._maps) <= len(windows.shards)
    # 1 MiB of reads may map 16 windows (each with the kernel's 64 KiB around it): the maps were dropped
    assert windows._mapped < windows.remap_bytes
    assert torch.equal(windows[3], torch.from_numpy(stream[300:400]))
    with pytest.raises(IndexError):
        windows[torch.tensor([len(windows)])]
    again = pickle.loads(pickle.dumps(windows))  # what a worker process gets
    assert torch.equal(again[rows[:50]], windows[rows[:50]])


def test_a_damaged_set_is_one_line(prepared, tokenizer, tmp_path, cli):
    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    assert "every checksum matches" in cli("prepare", "--verify", broken).out
    shard = broken / "train_00003.bin"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert "train_00003.bin does not match its checksum" in one_line(cli("prepare", "--verify", broken))
    shard.write_bytes(bytes(raw[:-2]))  # truncated
    err = one_line(cli("prepare", "--verify", broken))
    assert f"train_00003.bin holds {len(raw) - 2} bytes, index.json says {len(raw)}" in err
    shard.unlink()
    assert "train_00003.bin is missing" in one_line(cli("prepare", "--verify", broken))
    (broken / "index.json").unlink()
    assert "holds no index.json" in one_line(cli("prepare", "--verify", broken))
    assert not shards.is_shard_set(broken) and not shards.is_shard_set("")
    err = one_line(cli("prepare", tmp_path, "--tokenizer", tokenizer, "--out", prepared))
    assert "already exists" in err


def test_a_run_refuses_shards_made_with_another_tokenizer(prepared, corpus, tmp_path, cli):
    other = tmp_path / "other.json"
    code.train_tokenizer([(code.stdlib_root() / "json" / "decoder.py").read_text()], 300).save(other)
    err = one_line(cli("train", "mlm-code", "--out", tmp_path / "run", "--no-progress", f"data.source={prepared}",
                       f"data.tokenizer={other}", "data.vocab_size=300", *TINY["mlm-code"]))
    assert "is not the tokenizer shard set" in err and str(prepared) in err


def test_an_interrupted_prepare_leaves_no_shard_set(corpus, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    added = []

    def add(self, split, ids):
        added.append(split)
        if len(added) == 20:
            raise KeyboardInterrupt
        return real(self, split, ids)

    real = shards.ShardWriter.add
    monkeypatch.setattr(shards.ShardWriter, "add", add)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(corpus, tokenizer, out, shard_mb=SHARD_MB, test_share=SHARE, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    (tmp_path / ".shards.partial").mkdir()  # what a SIGKILL leaves: hidden, and taken away by the next prepare
    (tmp_path / ".shards.partial" / "train_00000.bin").write_bytes(b"\0" * 10)
    monkeypatch.setattr(shards.ShardWriter, "add", real)
    shards.prepare(corpus, tokenizer, out, shard_mb=SHARD_MB, test_share=SHARE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


# who reads which windows ------------------------------------------------------------------------------
@pytest.mark.parametrize("micro_batch", [0, 3])
def test_ranks_and_workers_read_disjoint_windows_that_cover_one_process(prepared, micro_batch):
    windows = ShardWindows.open(prepared, "train", 64)
    n, steps = len(windows), range(7)
    cfg = TrainConfig(batch_size=12, seed=3, micro_batch=micro_batch)
    for step in steps:
        one = torch.cat(step_rows(n, cfg, step, world=1, rank=0))
        assert len(set(one.tolist())) == 12  # no epoch ends within these steps: 12 distinct windows
        for world in (1, 2):
            for workers in (1, 2, 3):
                shares = [worker_share(rows, w, workers)
                          for rank in range(world) for rows in step_rows(n, cfg, step, world=world, rank=rank)
                          for w in range(workers)]
                read = [set(s.tolist()) for s in shares]
                assert sum(map(len, read)) == 12 and set().union(*read) == set(one.tolist()), (world, workers)
                assert torch.equal(torch.cat(shares), one)  # in rank, micro-batch, worker order: the batch itself
                assert torch.equal(torch.cat([windows[s] for s in shares]), windows[one])


def toy_objective():
    torch.manual_seed(0)
    return MaskedTokenModeling(MaskedTokenModel(ModelConfig(300, Layout.seq(32), dim=16, depth=1, heads=2)))


@pytest.mark.parametrize("workers", [1, 3])
def test_the_loader_reads_ahead_what_the_trainer_asks_and_changes_nothing(prepared, workers, tmp_path):
    windows = ShardWindows.open(prepared, "train", 32)
    cfg = TrainConfig(steps=6, batch_size=8, micro_batch=4, warmup=1, seed=1)
    plan = lambda step: step_rows(len(windows), cfg, step, world=1, rank=0)  # noqa: E731
    loader = WindowLoader(windows, plan, workers=workers, ahead=2, steps=cfg.steps)
    ahead = Trainer(toy_objective(), {"tokens": loader}, cfg, tmp_path / "ahead", {"recipe": "t"}, progress=False)
    ahead.fit()
    assert (loader.stats.hits, loader.stats.misses) == (12, 0)  # 6 steps x 2 micro-batches, all read ahead
    assert loader.stats.windows == 8 * 6
    wrong = WindowLoader(windows, lambda step: step_rows(len(windows), cfg, step + 1, world=1, rank=0), workers=2)
    astray = Trainer(toy_objective(), {"tokens": wrong}, cfg, tmp_path / "astray", {"recipe": "t"}, progress=False)
    astray.fit()
    assert wrong.stats.misses == 12  # a plan that is off reads on the spot
    whole = {"tokens": windows[:]}  # every window in memory, as a tensor
    plain = Trainer(toy_objective(), whole, cfg, tmp_path / "plain", {"recipe": "t"}, progress=False)
    plain.fit()
    for k, v in plain.objective.state_dict().items():
        assert torch.equal(v, ahead.objective.state_dict()[k]) and torch.equal(v, astray.objective.state_dict()[k]), k
    loader.close()
    wrong.close()


# training through the command line ---------------------------------------------------------------------
def test_mlm_code_trains_on_shards_and_resumes_to_the_same_weights(corpus, tokenizer, tmp_path, cli):
    out = tmp_path / "shards"
    ran = cli("prepare", corpus, "--tokenizer", tokenizer, "--out", out, "--shard-mb", SHARD_MB, "--test-share",
              SHARE, "--no-progress")
    assert ran.code == 0 and f"wrote {out}" in ran.out and "2 files skipped" in ran.out, ran
    argv = ["train", "mlm-code", "--no-progress", f"data.source={out}", "data.vocab_size=300", "data.length=32",
            "train.checkpoint_every=1", *TINY["mlm-code"]]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli(*argv, "--out", whole).code == 0
    assert cli(*argv, "--out", broken).code == 0
    shutil.rmtree(broken / "checkpoints" / "step_00000002")  # killed after step 1's checkpoint
    ran = cli(*argv, "--out", broken)
    assert ran.code == 0, ran.err
    a, _, _ = load_checkpoint(whole / "checkpoints" / "step_00000002")
    b, _, _ = load_checkpoint(broken / "checkpoints" / "step_00000002")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert (whole / "metrics.csv").read_text() == (broken / "metrics.csv").read_text()
    assert (broken / "tokenizer.json").read_bytes() == tokenizer.read_bytes()  # taken from the shard set
    metrics = json.loads((whole / "metrics.json").read_text())
    files = sum(p.is_file() for p in corpus.rglob("*"))
    assert set(metrics) == {"heldout_accuracy"} and json.loads((whole / "data.json").read_text())["files"] == files


def test_the_kept_epoch_order_is_the_order_drawn_every_step_before():
    from unmask.train.trainer import batch_indices, epoch_order, step_generator

    for n, seed, epoch in ((1, 0, 0), (1000, 3, 2), (70_001, 7, 0)):
        drawn = torch.randperm(n, generator=step_generator(seed, epoch, stream=1))  # int64, as before it was kept
        assert torch.equal(epoch_order(n, seed, epoch).long(), drawn)
    rows = batch_indices(1000, 600, 3, 1)  # positions 600..1199: the end of epoch 0, the start of epoch 1
    assert rows.dtype == torch.long
    assert torch.equal(rows, torch.cat([epoch_order(1000, 3, 0)[600:], epoch_order(1000, 3, 1)[:200]]).long())
