"""benchmarks/points_video_compute.py: the equal-compute step counts behind the P60 / P58 / P57 rows
(each variant gets the baseline's training CPU, not its steps) and the shrunk recipes it trains."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import points_video_compute as bench  # noqa: E402


def test_equal_compute_steps_give_the_baseline_cpu():
    # a method twice as costly per step gets half the steps; a cheaper one gets more
    assert bench.equal_compute_steps(2000, 60.0, 120.0) == 1000
    assert bench.equal_compute_steps(2000, 62.8, 91.1) == round(2000 * 62.8 / 91.1) == 1379
    assert bench.equal_compute_steps(600, 200.0, 100.0) == 1200
    for budget, base, cost in [(2000, 62.8, 91.1), (600, 187.2, 207.4), (777, 10.0, 33.0)]:
        steps = bench.equal_compute_steps(budget, base, cost)
        assert abs(steps * cost - budget * base) <= cost / 2  # within half a step of equal CPU


def test_equal_compute_steps_never_zero_and_reject_bad_costs():
    assert bench.equal_compute_steps(1, 1.0, 1000.0) == 1
    for args in [(0, 1.0, 1.0), (10, 0.0, 1.0), (10, 1.0, -2.0)]:
        with pytest.raises(ValueError, match="positive step costs"):
            bench.equal_compute_steps(*args)


def test_jobs_read_the_cached_costs_and_pair_every_seed(tmp_path):
    (tmp_path / "points-costs.json").write_text(json.dumps({"pointmae": 60.0, "pointbert": 90.0, "pointcmae": 120.0}))
    jobs = bench.jobs("points", "compute", [0, 1, 2], tmp_path)
    budget = bench.BUDGET["points"]
    assert jobs == [("pointbert", round(budget * 60 / 90), s) for s in (0, 1, 2)] + \
                   [("pointcmae", budget // 2, s) for s in (0, 1, 2)]
    assert bench.jobs("points", "compute", [0], tmp_path, "pointcmae") == [("pointcmae", budget // 2, 0)]
    assert bench.jobs("points", "base", [0, 1, 2], tmp_path) == [("pointmae", budget, s) for s in (0, 1, 2)]
    # the curve's point at the budget is the baseline's seed-0 run, not run twice
    assert all(steps != budget and seed == 0 for _, steps, seed in bench.jobs("points", "curve", [0], tmp_path))
    with pytest.raises(ValueError, match="unknown share"):
        bench.jobs("points", "compute", [0], tmp_path, "crossvideo")


def test_shrunk_recipes_change_only_the_size_and_share_everything_else():
    for task in ("points", "video"):
        base = bench.recipe(task, bench.BASELINE[task], 100, 1, False)
        assert base.settings.model.dim == 64 and base.settings.model.decoder_dim == 32
        assert base.settings.train.steps == 100 and base.settings.train.seed == 1
        for variant in bench.VARIANTS[task]:
            other = bench.recipe(task, variant, 100, 1, False)
            assert other.settings.objective.variant == variant
            # same budget knobs for both: lr, batch, width, depth
            assert other.settings.train == base.settings.train
            assert other.settings.model == base.settings.model
