import math

import pytest
import torch

from unmask.layout import Layout, Segment
from unmask.schedules import SCHEDULES, Schedule


def test_layout_segments_and_slices():
    lay = Layout.seq(1, name="label") + Layout.grid(8, 8, name="pixels") + Layout.video(2, 3, 4, name="v")
    assert lay.n == 1 + 64 + 24
    assert lay.slice("pixels") == slice(1, 65)
    assert lay.slice("v") == slice(65, 89)
    assert lay.segment("v").shape == (2, 3, 4)
    assert Layout.from_dict(lay.to_dict()) == lay


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="unique"):
        Layout.seq(2, name="a") + Layout.seq(3, name="a")
    with pytest.raises(ValueError, match="kind"):
        Segment("x", "cube", (2,))
    with pytest.raises(ValueError, match="dims"):
        Segment("x", "grid", (2,))
    with pytest.raises(ValueError, match="empty"):
        Layout.streams(0, 4)
    with pytest.raises(KeyError, match="pixels"):
        Layout.grid(2, 2, name="pixels").slice("label")


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_end_points_and_monotone(name):
    gamma = Schedule(name)
    assert gamma(0.0).item() == pytest.approx(1.0, abs=1e-12)
    assert gamma(1.0).item() == pytest.approx(0.0, abs=1e-12)
    r = torch.linspace(0, 1, 1001, dtype=torch.float64)
    values = gamma(r)
    assert (values[1:] <= values[:-1] + 1e-15).all()
    assert ((values >= 0) & (values <= 1)).all()


def test_schedule_closed_forms_at_half():
    assert Schedule("linear")(0.5).item() == pytest.approx(0.5)
    assert Schedule("cosine")(0.5).item() == pytest.approx(math.cos(math.pi / 4))
    assert Schedule("power", power=3.0)(0.5).item() == pytest.approx(1 - 0.125)
    assert Schedule("arccos")(0.5).item() == pytest.approx(math.acos(0.5) * 2 / math.pi)


def test_schedule_rejects_unknown_name():
    with pytest.raises(ValueError, match="cosine"):
        Schedule("cosin")
