"""The mask gallery draws every exported masker, on every layout where it applies."""

import pytest
import torch

from unmask import masking
from unmask.masking import Masker
from unmask.masking.gallery import LAYOUTS, draw_gallery, exported_maskers


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    path = tmp_path_factory.mktemp("gallery") / "masks.png"
    return path, draw_gallery(path, ratio=0.25)


def test_gallery_draws_every_exported_masker(drawn):
    path, cells = drawn
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exported = {name for name in masking.__all__
                if isinstance(getattr(masking, name), type) and issubclass(getattr(masking, name), Masker)
                and getattr(masking, name) is not Masker}
    assert {type(m).__name__ for _, m in exported_maskers()} == exported
    labels = {label for label, _ in cells}
    assert {f"ColorMask {c}" for c in ("red", "blue", "green", "purple")} <= labels
    for label, _ in exported_maskers():
        assert any(cells[label, lname] is not None for lname in LAYOUTS), f"{label} applies to no layout"


def test_gallery_cells_are_the_maskers_own_masks(drawn):
    _, cells = drawn
    for lname, layout in LAYOUTS.items():
        mask = cells["RandomMask", lname]
        assert mask.dtype == torch.bool and int(mask.sum()) == round(0.25 * layout.n)
    assert cells["TubeMask", "grid 16x16"] is None  # a tube needs time
    tube = cells["TubeMask", "video 4x8x8"].view(4, 64)
    assert (tube == tube[0]).all()  # the same places hidden in every frame
