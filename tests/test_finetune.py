"""Fine-tuning evaluation (eval/finetune.py): every weight trained unless frozen, pads left out of the
pooled mean, accuracy by hand, a separable task learned and random labels not generalised, the
validation split carved from training files only, clear errors."""

import pytest
import torch
from torch import nn

from unmask.data.code import CodeCorpus, CodeSplit, layout
from unmask.errors import UnmaskError
from unmask.eval.finetune import (
    FinetuneClassifier,
    accuracy,
    balanced_accuracy,
    file_split,
    finetune,
    majority_share,
    package_finetune,
)
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.train.trainer import TrainConfig

V, N, D = 40, 8, 16


def tiny_net(seed: int = 0) -> MaskedTokenModel:
    torch.manual_seed(seed)
    return MaskedTokenModel(ModelConfig(V, layout(N), dim=D, depth=1, heads=2))


def separable(m: int, seed: int, random_labels: bool = False):
    """Long[m, N] tokens whose class (0 or 1) is written by the token at every place: class c draws
    its tokens from its own half of the vocabulary. With random_labels, labels ignore the tokens."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (m,), generator=g)
    x = torch.randint(0, V // 2, (m, N), generator=g) + y[:, None] * (V // 2)
    if random_labels:
        y = torch.randint(0, 2, (m,), generator=g)
    return x, y


def cfg(steps: int = 40, **kw) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "batch_size": 32, "lr": 3e-3, "warmup": 2, "log_every": steps} | kw)


def encoder_state(net: nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("head")}


def test_finetuning_moves_the_encoder_and_freezing_keeps_it_bit_identical(tmp_path):
    x, y = separable(64, 0)
    net = tiny_net()
    before = encoder_state(net)
    clf = finetune(net, D, 2, x, y, cfg(10), tmp_path / "all")
    after = encoder_state(net)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("encoder") for k in moved)  # the Transformer's blocks, not only the head
    assert any(k.startswith("embed") for k in moved)
    assert clf.backbone is net

    frozen_net = tiny_net()
    before = encoder_state(frozen_net)
    clf = finetune(frozen_net, D, 2, x, y, cfg(10), tmp_path / "frozen", freeze=True, seed=0)
    for k, v in encoder_state(frozen_net).items():
        assert torch.equal(v, before[k]), k
    torch.manual_seed(0)
    head_before = FinetuneClassifier(tiny_net(), D, 2).head.weight
    assert not torch.equal(clf.head.weight, head_before)  # the head alone was trained


class PerPlace(nn.Module):
    """features = an embedding of each token alone: what a pad holds cannot reach a real place, so
    the pooled mean can be checked by hand."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(V, D)

    def features(self, tokens):
        return self.table(tokens)


def test_pooled_mean_reads_real_tokens_only():
    torch.manual_seed(0)
    pad = 0
    clf = FinetuneClassifier(PerPlace(), D, 3, pad_id=pad)
    x = torch.tensor([[5, 6, 7, pad, pad], [9, pad, pad, pad, pad], [1, 2, 3, 4, 5]])
    want = torch.stack([clf.backbone.table(torch.tensor([5, 6, 7])).mean(0),
                        clf.backbone.table(torch.tensor([9])).mean(0),
                        clf.backbone.table(torch.tensor([1, 2, 3, 4, 5])).mean(0)])
    torch.testing.assert_close(clf.logits(x), clf.head(want))
    with torch.no_grad():
        clf.backbone.table.weight[pad] += 100.0  # what pads hold changes nothing
    torch.testing.assert_close(clf.logits(x), clf.head(want))
    # no pad_id: the mean runs over every place, PooledClassifier's rule
    plain = FinetuneClassifier(clf.backbone, D, 3)
    plain.head = clf.head
    torch.testing.assert_close(plain.logits(x), clf.head(clf.backbone.table(x).mean(1)))


def test_accuracy_by_hand():
    pred, y = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])
    assert accuracy(pred, y) == 0.75
    assert balanced_accuracy(pred, y) == pytest.approx((1.0 + 2 / 3) / 2)  # class 0: 1/1, class 1: 2/3
    # a constant guess of the majority: plain accuracy = its share, balanced = 1 / classes
    y = torch.tensor([2, 2, 2, 0, 1])
    guess = torch.full_like(y, 2)
    assert accuracy(guess, y) == majority_share(y) == 0.6
    assert balanced_accuracy(guess, y) == pytest.approx(1 / 3)


def test_separable_task_is_learned_and_random_labels_do_not_generalise(tmp_path):
    x, y = separable(256, 0)
    xt, yt = separable(128, 1)
    clf = finetune(tiny_net(), D, 2, x, y, cfg(40), tmp_path / "sep")
    assert accuracy(clf.predict(xt), yt) > 0.95
    xr, yr = separable(256, 0, random_labels=True)
    xtr, ytr = separable(128, 1, random_labels=True)
    clf = finetune(tiny_net(), D, 2, xr, yr, cfg(40), tmp_path / "random")
    assert abs(accuracy(clf.predict(xtr), ytr) - 0.5) < 0.15


def test_file_split_holds_whole_files_out():
    files = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 4])
    kept, held = file_split(files, 0.4, torch.Generator().manual_seed(0))
    assert sorted(kept.tolist() + held.tolist()) == list(range(10))
    assert not set(files[kept].tolist()) & set(files[held].tolist())
    assert len(files[held].unique()) == 2  # round(0.4 * 5 files)
    with pytest.raises(UnmaskError, match="share"):
        file_split(files, 1.0, torch.Generator())
    with pytest.raises(UnmaskError, match="no training chunk"):
        file_split(torch.zeros(4, dtype=torch.long), 0.5, torch.Generator())


def fake_corpus(bad_test: bool = False) -> CodeCorpus:
    """Two packages, 60 training chunks (6 files) and 20 held-out ones each; the package is written
    in the tokens, as in `separable`. bad_test: held-out tokens out of the vocabulary, so any read of
    them by the network fails."""
    def split(m: int, seed: int, prefix: str) -> CodeSplit:
        y = torch.arange(2 * m) % 2  # alternate packages; file r of a package holds rows r, r + 12, ...
        x = torch.randint(0, V // 2, (2 * m, N), generator=torch.Generator().manual_seed(seed)) + y[:, None] * (V // 2)
        files = tuple(f"{pkg}/{prefix}{i}.py" for pkg in ("email", "xml") for i in range(6))
        file_index = torch.tensor([(r % 2) * 6 + (r // 2) % 6 for r in range(2 * m)])
        return CodeSplit(x, x, x, file_index, torch.zeros(2 * m, dtype=torch.long), files)

    test = split(20, 1, "t")
    if bad_test:
        test = CodeSplit(test.tokens + 10 * V, *[getattr(test, f) for f in ("word_ids", "entity_ids", "file_index",
                                                                             "start", "files")])
    return CodeCorpus(None, split(60, 0, "a"), test, None)


def test_package_finetune_validates_on_training_files_only(tmp_path):
    r = package_finetune(tiny_net(), D, fake_corpus(bad_test=True), cfg(20), tmp_path / "val", validation=0.25)
    assert r.classes == 2 and r.train_examples + r.scored_examples == 120
    assert r.scored_examples == 30  # 3 of the 12 training files, 10 chunks each
    with pytest.raises(ValueError, match="token ids"):  # the test split is read only without validation
        package_finetune(tiny_net(), D, fake_corpus(bad_test=True), cfg(2), tmp_path / "test")
    r = package_finetune(tiny_net(), D, fake_corpus(), cfg(40), tmp_path / "ok")
    assert r.scored_examples == 40 and r.accuracy > 0.9 and r.majority == 0.5


def test_bad_inputs_name_the_problem(tmp_path):
    x, y = separable(8, 0)
    net = tiny_net()
    with pytest.raises(UnmaskError, match="0..1"):
        finetune(net, D, 2, x, y + 1, cfg(1), tmp_path / "a")
    with pytest.raises(UnmaskError, match="one per row"):
        finetune(net, D, 2, x, y[:4], cfg(1), tmp_path / "b")
    with pytest.raises(UnmaskError, match="Long"):
        finetune(net, D, 2, x.float(), y, cfg(1), tmp_path / "c")
    with pytest.raises(UnmaskError, match="at least 2 classes"):
        finetune(net, D, 1, x, y * 0, cfg(1), tmp_path / "d")
    with pytest.raises(UnmaskError, match="no labelled"):
        finetune(net, D, 2, x[:0], y[:0], cfg(1), tmp_path / "e")
    with pytest.raises(UnmaskError, match="features"):
        finetune(nn.Linear(2, 2), D, 2, x, y, cfg(1), tmp_path / "f")
    with pytest.raises(UnmaskError, match="same shape|one shape"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0]))
