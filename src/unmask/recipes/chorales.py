"""Recipe `chorales`: one masked model over the four voices of Bach chorales that generates any subset
of voices given the others (GETMusic, Lv et al. 2023, P16, at the scale of the 328 four-part chorales
bundled with music21).

Each training window (16 eighth-note steps, 8 beats; optionally in several transpositions) picks its
content voices (GETMusic's target tracks: 1 to 4 of them, a uniform subset) and hides a
cosine-schedule share of their tokens (`masking.tracks.TrackMask`); the other voices are given whole.
The same weights then harmonise a given soprano (alto, tenor and bass generated), fill any other set
of voices, or write all four from nothing. Chorales longer than a window are filled window by window:
each new window advances by half a window and takes the half it shares with the previous one as
given. Evaluation samples in random order (`ancestral`): confidence-first decoding (`maskgit`) fills
the near-certain HOLD tokens first and ends with long held chords (docs/music.md).

    unmask train chorales --out runs/chorales        # parse (cached), train, evaluate, write MIDI
    unmask eval runs/chorales                        # metrics.json, report.md and midi/ again
    unmask sample runs/chorales --n 8                # eight unconditional windows as samples.mid
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import option
from ..data import music
from ..eval import music as music_eval
from ..masking.tracks import TrackMask
from ..nn import MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..sampling import generate
from ..sampling.named import NAMES, named_sampler
from ..schedules import SCHEDULES, Schedule
from ..seeding import seeded
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

NAME = "chorales"
PAPERS = ("P16",)
SUMMARY = "Bach chorales as 4 voices x time: one model harmonises a soprano, fills any voices, or writes all four"
SAMPLERS = NAMES
HARMONISE = np.array([False, True, True, True])  # soprano given; alto, tenor, bass generated
_CORPORA: dict[tuple, list[music.Chorale]] = {}


@dataclass(frozen=True)
class Config:
    steps: int = option(2000, lo=1, help="training steps")
    batch_size: int = option(32, lo=1, help="windows per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(50, lo=0, help="warmup steps")
    seed: int = option(0, lo=0, help="seed of every random draw")
    dim: int = option(128, lo=8, help="Transformer width")
    depth: int = option(4, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")
    grid: int = option(2, choices=music.GRIDS, help="steps per quarter note: 2 eighths, 4 sixteenths")
    window: int = option(16, lo=2, help="steps per window (the model's span)")
    hop: int = option(4, lo=1, help="steps between training windows")
    transpose: int = option(0, lo=0, hi=6, help="also train on every window moved -transpose..transpose-1 semitones")
    schedule: str = option("cosine", choices=SCHEDULES, help="share of the content voices hidden")
    sampler: str = option("ancestral", choices=SAMPLERS, help="sampler used by eval")
    sampler_steps: int = option(16, lo=1, help="MaskGIT / ancestral steps per window")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature")
    choice_temperature: float = option(1.0, lo=0.0, help="MaskGIT choice noise")
    harmonies: int = option(2, lo=1, help="harmonisations drawn per held-out chorale")
    unconditional: int = option(64, lo=1, help="windows drawn from nothing by eval")
    midi_examples: int = option(3, lo=0, help="held-out chorales written as MIDI")
    cache: str = option("", help="folder of the parsed-corpus cache; empty: the run folder")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           seed=self.seed, checkpoint_every=self.checkpoint_every, log_every=25)

    def model_config(self) -> ModelConfig:
        return ModelConfig(music.VOCAB_SIZE, music.layout(self.window), dim=self.dim, depth=self.depth,
                           heads=self.heads)

    def sampler_object(self):
        return named_sampler(self.sampler, self.sampler_steps, self.temperature, self.choice_temperature)


def build(cfg: Config) -> MaskedTokenModeling:
    with seeded(cfg.seed):
        model = MaskedTokenModel(cfg.model_config())
    return MaskedTokenModeling(model, TrackMask(), Schedule(cfg.schedule))


def run_config(cfg: Config) -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def corpus(cfg: Config, run_dir: Path, progress: bool = False) -> list[music.Chorale]:
    """The parsed chorales, cached in `cfg.cache` (or the run folder) and in this process."""
    where = Path(cfg.cache or run_dir)
    key = (str(where.resolve()), cfg.grid)
    if key not in _CORPORA:
        _CORPORA[key] = music.load_corpus(where, steps_per_quarter=cfg.grid, progress=progress)
    return _CORPORA[key]


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    train_set, _ = music.split(corpus(cfg, run_dir, progress))
    shifts = range(-cfg.transpose, cfg.transpose) if cfg.transpose else (0,)
    data = {"tokens": music.windows(train_set, cfg.window, cfg.hop, shifts)}
    objective = build(cfg)
    fit(objective, data, cfg.train_config(), run_dir, run_config(cfg), progress)
    return evaluate(cfg, objective, run_dir)


def window_starts(steps: int, length: int) -> list[int]:
    """Starts of the windows that fill a piece: 0, length // 2, ..., and one ending at the end."""
    if steps < length:
        raise ValueError(f"a piece of {steps} steps is shorter than the model's window of {length}")
    return sorted(set(range(0, steps - length + 1, max(1, length // 2))) | {steps - length})


@torch.no_grad()
def fill_voices(model, pieces: list[np.ndarray], content: np.ndarray, sampler, generator=None) -> list[np.ndarray]:
    """Generate the voices where `content` (Bool[4]) is True in every piece (int [4, T], T at least the
    model's window); the other voices are given and never change. Windows run left to right; the
    pieces' i-th windows are drawn together in one `generate` call. Returns new int64 arrays [4, T]."""
    length = model.config.layout.segments[0].shape[1]
    content = np.asarray(content, dtype=bool)
    outs = []
    for p in pieces:
        out = np.array(p, dtype=np.int64)
        out[content] = music.MASK_ID
        outs.append(out)
    plans = [window_starts(p.shape[1], length) for p in outs]
    for r in range(max(len(plan) for plan in plans)):
        todo = [(i, plan[r]) for i, plan in enumerate(plans) if r < len(plan)]
        canvas = np.stack([music.window(outs[i], s, length) for i, s in todo])  # [b, 4, L]
        filled = generate(model, torch.from_numpy(canvas).view(len(todo), -1), sampler, mask_id=music.MASK_ID,
                          generator=generator).tokens.view(canvas.shape).numpy()
        for (i, s), before, after in zip(todo, canvas, filled, strict=True):
            part = outs[i][:, s : s + length]
            part[:] = np.where(before == music.MASK_ID, after, part)
    return outs


@torch.no_grad()
def draw_unconditional(cfg: Config, model, n: int, generator) -> list[np.ndarray]:
    canvas = torch.full((n, model.config.layout.n), music.MASK_ID)
    tokens = generate(model, canvas, cfg.sampler_object(), mask_id=music.MASK_ID, generator=generator).tokens
    return list(tokens.view(n, len(music.VOICES), cfg.window).numpy())


def evaluate(cfg: Config, objective: MaskedTokenModeling, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    model = objective.model.eval()
    train_set, test = music.split(corpus(cfg, run_dir))

    def fresh():  # each part draws from its own generator, so its figures do not move with the others'
        return torch.Generator().manual_seed(cfg.seed)

    real = [c.tokens for c in test]
    keys = [(c.tonic, c.minor) for c in test]
    repeated = [p for p in real for _ in range(cfg.harmonies)]
    rep_keys = [k for k in keys for _ in range(cfg.harmonies)]
    generated = fill_voices(model, repeated, HARMONISE, cfg.sampler_object(), fresh())
    probs = music_eval.fit_unigram([c.tokens for c in train_set])
    g = fresh()
    unigram = [music_eval.unigram_harmony(p, probs, g) for p in repeated]

    def scored(pieces, reference, k, voices=music_eval.GENERATED):
        return music_eval.score(pieces, steps_per_quarter=cfg.grid, real=reference, keys=k, voices=voices)

    rows = {"model": scored(generated, repeated, rep_keys), "unigram": scored(unigram, repeated, rep_keys),
            "real": scored(real, real, keys)}
    uncond = draw_unconditional(cfg, model, cfg.unconditional, fresh())
    real_windows = list(music.windows(test, cfg.window, cfg.window).view(-1, len(music.VOICES), cfg.window).numpy())
    every = tuple(range(len(music.VOICES)))
    rows["model_unconditional"] = scored(uncond, None, None, every)
    rows["real_windows"] = scored(real_windows, None, None, every)
    metrics = {f"{row}.{k}": v for row, values in rows.items() for k, v in values.items()}
    same = [np.array_equal(a[0], b[0]) for a, b in zip(generated, repeated, strict=True)]
    metrics["given_soprano_unchanged"] = float(all(same))
    metrics["held_out_chorales"] = len(test)
    metrics["held_out_beats"] = sum(p.shape[1] for p in real) / cfg.grid
    write_json(run_dir / "metrics.json", metrics)
    write_midi_examples(cfg, test, generated, uncond, run_dir / "midi")
    write_report(cfg, rows, metrics, run_dir)
    return metrics


def write_midi_examples(cfg: Config, test, generated, uncond, folder: Path) -> None:
    for c, harmony in zip(test[: cfg.midi_examples], generated[:: cfg.harmonies], strict=False):
        stem = c.name.replace("/", "-")
        music.write_midi(harmony, folder / f"{stem}-harmonised.mid", cfg.grid)
        music.write_midi(c.tokens, folder / f"{stem}-real.mid", cfg.grid)
    for i, piece in enumerate(uncond[: cfg.midi_examples]):
        music.write_midi(piece, folder / f"unconditional-{i}.mid", cfg.grid)


COLUMNS = (("note_accuracy", "note accuracy"), ("in_key_ratio", "in-key ratio"),
           ("range_violations_per_100_beats", "range violations / 100 beats"),
           ("parallel_fifths_per_100_beats", "parallel 5ths / 100 beats"),
           ("parallel_octaves_per_100_beats", "parallel 8ves / 100 beats"), ("notes_per_beat", "notes / beat"))


def write_report(cfg: Config, rows: dict, metrics: dict, run_dir: Path) -> None:
    def line(name, values):
        cells = [f"{values[k]:.3f}" if k in values else "" for k, _ in COLUMNS]
        return f"| {name} | " + " | ".join(cells) + " |"

    grid = "eighth" if cfg.grid == 2 else "sixteenth"
    lines = [
        "# chorales: one masked model over soprano, alto, tenor and bass",
        "",
        f"Recipe `chorales` (P16, GETMusic's track masking), {cfg.steps} steps of {cfg.batch_size} windows of "
        f"{cfg.window} {grid} steps, width {cfg.dim}, depth {cfg.depth}, seed {cfg.seed}; sampler `{cfg.sampler}` "
        f"({cfg.sampler_steps} steps per window, temperature {cfg.temperature}).",
        "",
        f"Harmonisation of {metrics['held_out_chorales']} held-out chorales ({metrics['held_out_beats']:.0f} beats), "
        f"soprano given, alto, tenor and bass generated ({cfg.harmonies} draws each); metrics over A, T, B:",
        "",
        "| | " + " | ".join(c for _, c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
        line("model", rows["model"]),
        line("unigram baseline", rows["unigram"]),
        line("real chorales", rows["real"]),
        "",
        f"Unconditional: {cfg.unconditional} windows from nothing against the held-out chorales' windows, "
        "metrics over all four voices:",
        "",
        "| | " + " | ".join(c for _, c in COLUMNS[2:]) + " |",
        "|---" * (len(COLUMNS) - 1) + "|",
        "| model | " + " | ".join(f"{rows['model_unconditional'][k]:.3f}" for k, _ in COLUMNS[2:]) + " |",
        "| real windows | " + " | ".join(f"{rows['real_windows'][k]:.3f}" for k, _ in COLUMNS[2:]) + " |",
        "",
        f"Given soprano unchanged in every harmonisation: {bool(metrics['given_soprano_unchanged'])}. "
        "MIDI examples are in `midi/`.",
        "",
    ]
    (Path(run_dir) / "report.md").write_text("\n".join(lines))


def sample(cfg: Config, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
    """n unconditional windows, one after another with a bar of rest between, as one MIDI file
    (`out` with the suffix `.mid`)."""
    g = torch.Generator().manual_seed(cfg.seed)
    pieces = draw_unconditional(cfg, objective.model.eval(), n, g)
    gap = np.full((len(music.VOICES), 4 * cfg.grid), music.REST)
    joined = np.concatenate([x for p in pieces for x in (p, gap)][:-1], axis=1)
    path = Path(out).with_suffix(".mid")
    music.write_midi(joined, path, cfg.grid)
    return path
