"""Recipe `chorales`: one masked model over the four voices of Bach chorales that generates any subset
of voices given the others (GETMusic, Lv et al. 2023, arXiv:2305.10841, P16, at the scale of the 328
four-part chorales bundled with music21).

Each training window (16 eighth-note steps, 8 beats; optionally in several transpositions) picks its
content voices (GETMusic's target tracks: 1 to 4 of them, a uniform subset) and hides a
cosine-schedule share of their tokens (`masking.tracks.TrackMask`); the other voices are given whole.
The same weights then harmonise a given soprano (alto, tenor and bass generated), fill any other set
of voices, or write all four from nothing. Chorales longer than a window are filled window by window:
each new window advances by half a window and takes the half it shares with the previous one as
given. Evaluation samples in random order (`ancestral`): confidence-first decoding (`maskgit`) fills
the near-certain HOLD tokens first and ends with long held chords (docs/music.md).

    unmask train chorales --out runs/chorales               # parse (cached), train, evaluate, write MIDI
    unmask eval runs/chorales sampler.name=first-hitting    # metrics.json, report.md and midi/ again
    unmask sample runs/chorales --n 8                       # eight unconditional windows as samples.mid
    unmask train chorales data.source=my_quartets/ --out runs/mine   # your own MIDI / MusicXML (docs/data.md)

With `data.source` the pieces are the user's (`data/user_music.py`: the first four parts of each
file as soprano, alto, tenor and bass, on the same grid; a hash split as the chorales'); each must
be at least a window long.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import option, section
from ..data import music
from ..data.user_music import read_music
from ..eval import music as music_eval
from ..eval.voice_leading import NoParallels
from ..masking.tracks import TrackMask
from ..nn import MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..sampling import generate
from ..sampling.constrained import ConstrainedSampler
from ..schedules import SCHEDULES, Schedule
from ..train import TrainConfig
from .base import Recipe, SamplerSettings, TransformerSettings, memo
from .report import Metric, Report, Table

HARMONISE = np.array([False, True, True, True])  # soprano given; alto, tenor, bass generated
COLUMNS = (("note_accuracy", "note accuracy", "higher"), ("in_key_ratio", "in-key ratio", "higher"),
           ("range_violations_per_100_beats", "range violations / 100 beats", "lower"),
           ("parallel_fifths_per_100_beats", "parallel 5ths / 100 beats", "lower"),
           ("parallel_octaves_per_100_beats", "parallel 8ves / 100 beats", "lower"),
           ("notes_per_beat", "notes / beat", ""))


@dataclass(frozen=True)
class Data:
    grid: int = option(2, choices=music.GRIDS, help="steps per quarter note: 2 eighths, 4 sixteenths")
    window: int = option(16, lo=2, help="steps per window (the model's span)")
    hop: int = option(4, lo=1, help="steps between training windows")
    transpose: int = option(0, lo=0, hi=6, help="also train on every window moved -transpose..transpose-1 semitones")
    cache: str = option("", help="folder of the parsed-corpus cache; empty: the run folder")
    source: str = option("", help="your music: a folder of MIDI (.mid, .midi) or MusicXML (.musicxml, .xml, "
                                  ".mxl) files of four parts; empty: music21's Bach chorales")


@dataclass(frozen=True)
class Objective:
    schedule: str = option("cosine", choices=SCHEDULES, help="share of the content voices hidden")


@dataclass(frozen=True)
class Eval:
    harmonies: int = option(2, lo=1, help="harmonisations drawn per held-out chorale")
    unconditional: int = option(64, lo=1, help="windows drawn from nothing by eval")
    midi_examples: int = option(3, lo=0, help="held-out chorales written as MIDI")


@dataclass(frozen=True)
class Sampler(SamplerSettings):
    voice_leading: bool = option(False, help="refuse notes that make parallel fifths or octaves "
                                             "(eval/voice_leading.py; AWRS draws, maskgit: by confidence, else random)")

    def for_window(self, steps: int):
        """The sampler for windows of `steps` steps (the voice-leading constraint needs the length)."""
        if not self.voice_leading:
            return self.build()
        order = "confidence" if self.name == "maskgit" else "random"
        return ConstrainedSampler(NoParallels(steps), self.steps, temperature=self.temperature, order=order)


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


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=2000, batch_size=32, lr=1e-3, warmup=50, log_every=25))
    model: TransformerSettings = section(TransformerSettings())
    data: Data = section(Data())
    objective: Objective = section(Objective())
    sampler: Sampler = section(Sampler("ancestral", 16, 1.0, 1.0))
    eval: Eval = section(Eval())


class Chorales(Recipe):
    name = "chorales"
    papers = ("P16",)
    summary = "Bach chorales as 4 voices x time: one model harmonises a soprano, fills any voices, or writes all four"
    Settings = Settings
    sample_suffix = ".mid"

    def model_config(self) -> ModelConfig:
        m = self.settings.model
        return ModelConfig(music.VOCAB_SIZE, music.layout(self.settings.data.window), dim=m.dim, depth=m.depth,
                           heads=m.heads)

    def build(self) -> MaskedTokenModeling:
        return MaskedTokenModeling(MaskedTokenModel(self.model_config()), TrackMask(),
                                   Schedule(self.settings.objective.schedule))

    def corpus(self, run) -> list[music.Chorale]:
        """The parsed chorales: read from (or parsed into) the disk cache in `data.cache` or the run
        folder, once per process."""
        d = self.settings.data
        where = Path(d.cache) if d.cache else run.folder
        return memo(("chorales", str(where.resolve()), d.grid),
                    lambda: music.load_corpus(where, steps_per_quarter=d.grid, progress=run.progress))

    def split(self, run) -> tuple[list[music.Chorale], list[music.Chorale]]:
        """(train, held out): the chorales split by name, or the user's pieces of `data.source` (what was
        read and skipped written as RUN/data.json)."""
        d = self.settings.data
        if not d.source:
            return music.split(self.corpus(run))
        pieces = memo(("user-music", d.source, d.grid, d.window),
                      lambda: read_music(d.source, steps_per_quarter=d.grid, min_steps=d.window))
        run.write_json("data.json", pieces.to_dict())
        return pieces.split()

    def training_data(self, run) -> dict:
        d = self.settings.data
        train_set, _ = self.split(run)
        shifts = range(-d.transpose, d.transpose) if d.transpose else (0,)
        return {"tokens": music.windows(train_set, d.window, d.hop, shifts)}

    @torch.no_grad()
    def draw_unconditional(self, model, n: int, generator) -> list[np.ndarray]:
        """n windows written from nothing: int64 arrays [4, window]."""
        canvas = torch.full((n, model.config.layout.n), music.MASK_ID)
        sampler = self.settings.sampler.for_window(self.settings.data.window)
        tokens = generate(model, canvas, sampler, mask_id=music.MASK_ID, generator=generator).tokens
        return list(tokens.view(n, len(music.VOICES), self.settings.data.window).numpy())

    def measure(self, run, objective: MaskedTokenModeling) -> dict:
        s, grid, window = self.settings, self.settings.data.grid, self.settings.data.window
        model = objective.model.eval()
        train_set, test = self.split(run)

        def fresh():  # each part draws from its own generator, so its figures do not move with the others'
            return torch.Generator().manual_seed(s.train.seed)

        real = [c.tokens for c in test]
        keys = [(c.tonic, c.minor) for c in test]
        repeated = [p for p in real for _ in range(s.eval.harmonies)]
        rep_keys = [k for k in keys for _ in range(s.eval.harmonies)]
        generated = fill_voices(model, repeated, HARMONISE, s.sampler.for_window(window), fresh())
        probs = music_eval.fit_unigram([c.tokens for c in train_set])
        g = fresh()
        unigram = [music_eval.unigram_harmony(p, probs, g) for p in repeated]

        def scored(pieces, reference, k, voices=music_eval.GENERATED):
            return music_eval.score(pieces, steps_per_quarter=grid, real=reference, keys=k, voices=voices)

        rows = {"model": scored(generated, repeated, rep_keys), "unigram": scored(unigram, repeated, rep_keys),
                "real": scored(real, real, keys)}
        uncond = self.draw_unconditional(model, s.eval.unconditional, fresh())
        real_windows = list(music.windows(test, window, window).view(-1, len(music.VOICES), window).numpy())
        every = tuple(range(len(music.VOICES)))
        rows["model_unconditional"] = scored(uncond, None, None, every)
        rows["real_windows"] = scored(real_windows, None, None, every)
        metrics = {f"{row}.{k}": v for row, values in rows.items() for k, v in values.items()}
        same = [np.array_equal(a[0], b[0]) for a, b in zip(generated, repeated, strict=True)]
        metrics["given_soprano_unchanged"] = float(all(same))
        metrics["held_out_chorales"] = len(test)
        metrics["held_out_beats"] = sum(p.shape[1] for p in real) / grid
        self.write_midi_examples(test, generated, uncond, run.file("midi"))
        return metrics

    def write_midi_examples(self, test, generated, uncond, folder: Path) -> None:
        """The first held-out chorales harmonised beside Bach's own, and the first unconditional windows."""
        n, grid = self.settings.eval.midi_examples, self.settings.data.grid
        for c, harmony in zip(test[:n], generated[:: self.settings.eval.harmonies], strict=False):
            stem = c.name.replace("/", "-")
            music.write_midi(harmony, folder / f"{stem}-harmonised.mid", grid)
            music.write_midi(c.tokens, folder / f"{stem}-real.mid", grid)
        for i, piece in enumerate(uncond[:n]):
            music.write_midi(piece, folder / f"unconditional-{i}.mid", grid)

    def report(self, metrics: dict) -> Report:
        s = self.settings
        grid = "eighth" if s.data.grid == 2 else "sixteenth"
        setup = (f"{self.setup()} Windows of {s.data.window} {grid} steps, GETMusic's track masking; sampler "
                 f"`{s.sampler.name}` ({s.sampler.steps} steps per window, temperature {s.sampler.temperature})"
                 f"{', no parallel fifths or octaves (AWRS)' if s.sampler.voice_leading else ''}.")
        if s.data.source:
            setup += (f" Music: `{s.data.source}`, the first four parts of each file as soprano, alto, tenor and "
                      "bass; held out by hash of the path.")
        harmonised = Table(
            tuple(Metric(f"model.{k}", label, f"unigram.{k}", better) for k, label, better in COLUMNS),
            "Harmonisation: model against the unigram baseline",
            f"{metrics.get('held_out_chorales')} held-out chorales ({metrics.get('held_out_beats', 0):.0f} beats), "
            f"soprano given, alto, tenor and bass generated ({s.eval.harmonies} draws each); metrics over A, T, B.")
        bach = Table(tuple(Metric(f"real.{k}", label) for k, label, _ in COLUMNS),
                     f"{'The held-out pieces' if s.data.source else 'Bach'}'s own alto, tenor and bass, scored by "
                     "the same code")
        unconditional = Table(
            tuple(Metric(f"model_unconditional.{k}", label, f"real_windows.{k}") for k, label, _ in COLUMNS[2:]),
            "Unconditional: model against the held-out chorales' own windows",
            f"{s.eval.unconditional} windows from nothing; metrics over all four voices.")
        checks = Table((Metric("given_soprano_unchanged", "given soprano unchanged in every harmonisation"),
                        Metric("held_out_chorales", "held-out chorales"), Metric("held_out_beats", "held-out beats")))
        return Report("chorales: one masked model over soprano, alto, tenor and bass", setup,
                      (harmonised, bach, unconditional, checks), notes=("MIDI examples are in `midi/`.",))

    def sample(self, run, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
        """n unconditional windows, one after another with a bar of rest between, as one MIDI file."""
        grid = self.settings.data.grid
        pieces = self.draw_unconditional(objective.model.eval(), n, torch.Generator().manual_seed(
            self.settings.train.seed))
        gap = np.full((len(music.VOICES), 4 * grid), music.REST)
        joined = np.concatenate([x for p in pieces for x in (p, gap)][:-1], axis=1)
        path = self.sample_path(out)
        music.write_midi(joined, path, grid)
        return path
