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
