"""The voice-leading constraint (`eval/voice_leading.py`): it refuses exactly the tokens that make a
parallel fifth or octave by `eval.music.parallels`, and harmonising under it (AWRS, the chorales
recipe's `sampler.voice_leading`) keeps the soprano and leaves no parallel inside a window."""

import numpy as np
import pytest
import torch

from unmask.data import music
from unmask.eval.music import parallels
from unmask.eval.voice_leading import NoParallels
from unmask.recipes.chorales import HARMONISE, Sampler, fill_voices
from unmask.sampling.ancestral import AncestralSampler
from unmask.sampling.constrained import ConstrainedSampler

M, H, R = music.MASK_ID, music.HOLD, music.REST
P = music.pitch_token
C3, G3, C4, D4, E4, G4, A4, C5, D5 = 48, 55, 60, 62, 64, 67, 69, 72, 74


def window(*voices) -> torch.Tensor:
    """Long[4 * T] from four rows of tokens (the voice-major order of a recipe window)."""
    return torch.tensor(np.array(voices, dtype=np.int64).reshape(-1))


def bass_at(t: int, steps: int = 4) -> int:
    return 3 * steps + t


def test_refuses_a_parallel_fifth_and_octave_with_the_soprano():
    rule = NoParallels(4)
    fifth = window([P(G4), H, P(A4), H], [R] * 4, [R] * 4, [P(C4), H, M, H])  # G4/C4 -> A4/?
    assert not rule(fifth, bass_at(2), P(D4))  # A4/D4: fifth to fifth, both up
    assert rule(fifth, bass_at(2), P(E4))  # a sixth: fine
    octave = window([P(C5), H, P(D5), H], [R] * 4, [R] * 4, [P(C4), H, M, H])
    assert not rule(octave, bass_at(2), P(D4))  # C5/C4 -> D5/D4
    double = window([P(C5), H, P(D5), H], [R] * 4, [R] * 4, [P(C3), H, M, H])
    assert not rule(double, bass_at(2), P(D4 - 12))  # C5/C3 -> D5/D3: a double octave is one (mod 12)


def test_accepts_contrary_motion_a_held_note_and_a_rest():
    rule = NoParallels(4)
    row = window([P(C5), H, P(D5), H], [R] * 4, [R] * 4, [P(C4), H, M, H])
    assert rule(row, bass_at(2), P(G3))  # C5/C4 -> D5/G3: a fifth, but reached by contrary motion
    assert rule(row, bass_at(2), H)  # the bass holds C4: oblique motion
    assert rule(row, bass_at(2), R)
    assert rule(row, bass_at(2), P(C4 + 12))  # D5 over C5 would be a second: fine


def test_a_hold_that_joins_two_fifths_is_refused():
    # soprano G4 held over step 1, then A4; bass C4 then ? then D4. A new bass note at step 1 is an event
    # between the two fifths; holding C4 makes G4/C4 -> A4/D4 successive: a parallel fifth.
    rule = NoParallels(4)
    row = window([P(G4), H, P(A4), H], [R] * 4, [R] * 4, [P(C4), M, P(D4), H])
    assert not rule(row, bass_at(1), H)
    assert rule(row, bass_at(1), P(E4))  # C4 -> E4 -> D4 against G4 -> G4 -> A4: no parallel


def test_later_notes_and_other_generated_voices_count_unknown_ones_do_not():
    rule = NoParallels(4)
    # the tenor (already drawn, to the right) makes the fifth with the candidate bass note
    row = window([R] * 4, [R] * 4, [P(G4), H, P(A4), H], [M, H, P(D4), H])
    assert not rule(row, bass_at(0), P(C4))
    assert rule(row, bass_at(0), P(E4))
    hidden_tenor = window([R] * 4, [R] * 4, [P(G4), H, M, H], [P(C4), H, M, H])
    assert rule(hidden_tenor, bass_at(2), P(D4))  # the tenor's note is not known yet: tested when drawn


def test_agrees_with_the_metric_on_random_windows():
    """Refused exactly when the finished pair would count more parallels than with a rest there."""
    g = np.random.default_rng(0)
    steps, rule = 6, NoParallels(6)
    pool = [H, R] + [P(m) for m in (C3, G3, C4, D4, E4, G4, A4)]
    refused = 0
    for _ in range(300):
        grid = g.choice(pool, size=(4, steps))
        v, t = int(g.integers(1, 4)), int(g.integers(0, steps))
        x = int(g.choice(pool))
        with_x, with_rest = grid.copy(), grid.copy()
        with_x[v, t], with_rest[v, t] = x, R
        makes = sum(parallels(with_x, voices=(v,))) > sum(parallels(with_rest, voices=(v,)))
        grid[v, t] = M
        assert rule(torch.tensor(grid.reshape(-1)), v * steps + t, x) == (not makes)
        refused += makes
    assert refused > 10  # the draws did test the refusing side


class ChordDenoiser:
    """A toy denoiser that likes a few consonant pitches and holds: parallels are common without the rule."""

    def __init__(self, steps: int):
        self.config = type("Config", (), {"layout": music.layout(steps)})()
        self.bias = torch.full((music.VOCAB_SIZE,), -4.0)
        self.bias[[H] + [P(m) for m in (C3, G3, C4, G4)]] = 0.0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*tokens.shape, -1).clone()


def sopranos(n: int, steps: int, seed: int) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        piece = np.full((4, steps), R)
        piece[0] = [P(int(g.choice((C4, D4, E4, G4, A4, C5)))) if k % 2 == 0 else H for k in range(steps)]
        out.append(piece)
    return out


def test_harmonising_under_the_rule_leaves_no_parallel_and_keeps_the_soprano():
    steps = 8
    model, pieces = ChordDenoiser(steps), sopranos(12, steps, 0)  # one window each: no seams
    free = fill_voices(model, pieces, HARMONISE, ConstrainedSampler(lambda *a: True, 4),
                       torch.Generator().manual_seed(0))
    ruled = fill_voices(model, pieces, HARMONISE, ConstrainedSampler(NoParallels(steps), 4),
                        torch.Generator().manual_seed(0))
    assert sum(sum(parallels(p)) for p in free) > 5  # the toy makes them freely
    assert all(parallels(p) == (0, 0) for p in ruled)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(ruled, pieces, strict=True))
    assert all((p[1:] != M).all() for p in ruled)


def test_longer_pieces_keep_the_soprano_and_lose_most_parallels():
    # windows overlap by half; a parallel across a seam is possible (module docstring), so not exactly zero
    steps = 8
    model, pieces = ChordDenoiser(steps), sopranos(6, 20, 1)
    free = fill_voices(model, pieces, HARMONISE, ConstrainedSampler(lambda *a: True, 4),
                       torch.Generator().manual_seed(0))
    ruled = fill_voices(model, pieces, HARMONISE, ConstrainedSampler(NoParallels(steps), 4),
                        torch.Generator().manual_seed(0))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(ruled, pieces, strict=True))
    assert sum(sum(parallels(p)) for p in ruled) * 4 < sum(sum(parallels(p)) for p in free)


def test_recipe_option_default_is_unchanged():
    assert isinstance(Sampler("ancestral", 16).for_window(16), AncestralSampler)
    ruled = Sampler("maskgit", 12, voice_leading=True).for_window(16)
    assert isinstance(ruled, ConstrainedSampler) and ruled.order == "confidence" and ruled.steps == 12
    assert ruled.constraint == NoParallels(16)
    assert Sampler("ancestral", 16, voice_leading=True).for_window(16).order == "random"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="steps"):
        NoParallels(1)
    rule = NoParallels(4)
    with pytest.raises(ValueError, match="4 voices x 4 steps"):
        rule(torch.full((12,), M), 0, P(C4))
    with pytest.raises(ValueError, match="outside"):
        rule(torch.full((16,), M), 16, P(C4))
