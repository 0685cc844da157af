"""`benchmarks/dllm_decoding.py`'s bound on the dual cache's gain from read costs alone, by hand."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dllm_decoding import dual_cache_bound  # noqa: E402


def test_the_bound_counts_a_full_read_per_block_and_light_reads_for_the_rest():
    # 256 tokens in 8 blocks of 32; low-confidence decoding without a cache: 256 full reads of cost 10
    assert dual_cache_bound(10, 1, 256, 32, 1) == pytest.approx(2560 / (8 * 10 + 248 * 1))  # 7.80x
    assert dual_cache_bound(10, 1, 256, 32, 4) == pytest.approx(2560 / (8 * 10 + 56 * 1))  # 64 reads, 8 full
    assert dual_cache_bound(10, 1, 256, 32, 64) == pytest.approx(2560 / 80)  # a block per read: entries only
    assert dual_cache_bound(10, 10, 256, 32, 1) == pytest.approx(1.0)  # a light read as dear as a full one


def test_the_closed_language_pads_answers_with_end_after_their_content():
    from argparse import Namespace

    import torch
    from dllm_decoding import END, closed_language

    args = Namespace(groups=3, members=4, prompt=8, answer=40, content=24, vocab=4096, vary=0.1)
    rows = closed_language(args, torch.Generator().manual_seed(0))
    assert rows.shape == (12, 48)
    assert (rows[:, 8 + 24 :] == END).all()  # the padding
    assert (rows[:, 8 : 8 + 24] != END).float().mean() > 0.99  # the content: END only by chance (1 in 4096)
    for g in range(3):  # a group's members share the prompt and most of the content
        members = rows[4 * g : 4 * g + 4]
        assert (members[:, :8] == members[0, :8]).all()
        assert (members[1:] != members[0]).any()
    assert not (rows[0, :8] == rows[4, :8]).all()  # groups have their own prompts
    whole = closed_language(Namespace(**{**vars(args), "content": 40}), torch.Generator().manual_seed(0))
    assert (whole[:, 8 + 24 :] != END).float().mean() > 0.99  # content = answer: no padding
