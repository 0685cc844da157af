"""Recipe `glyphs-generators`: four masked generators of glyph tokens on one budget, compared at equal
denoiser calls (NFE) in the feature space of one judge.

The glyphs (`data.image_sets`, 111 characters x 12 DejaVu faces, 32 x 32 grey) become 8 x 8 tokens
of an image tokenizer trained first in `RUN/tokenizer` (`recipes/image_tokens.py`, FSQ by default).
Each generator reads the class as a one-token prefix segment "label" (always given, as in
`recipes/digits.py`) and is trained for the same steps, batch and width:

- `maskgit` (MaskGIT, Chang et al. 2022, arXiv:2202.04200): the 8 x 8 tokens, random masks with a
  cosine ratio, decoded by confidence over `sampler.nfe` calls;
- `himar` (Hi-MAR, Zheng et al. 2025, arXiv:2505.20288): 4 x 4 pivot tokens (the tokenizer applied
  to the image area-downsampled 2x, `sampling/pivot.py`) before the dense tokens; two-phase
  training masks (`masking/coarse_to_fine.py`); `sampler.pivot_steps` calls on the pivots, the rest
  on the dense tokens;
- `hmar` (HMAR, Kumbong et al. 2025, arXiv:2506.04421, on VAR's scales, Tian et al. 2024,
  arXiv:2404.02905): token maps of 1, 2, 4 and 8 per side (the tokenizer applied to the image
  area-resized to each), block-causal attention across scales, `sampler.scale_steps` calls per scale;
- `shuffle` (Token-Shuffle, Ma et al. 2025, arXiv:2504.17789): MaskGIT's data and sampler, with
  the blocks reading one token per 2 x 2 window (`ModelConfig(shuffle=2)`).

Measured per generator: Fréchet distance (Heusel et al. 2017, arXiv:1706.08500) and improved
precision / recall (Kynkäänniemi et al. 2019, arXiv:1904.06991) of the decoded samples against the
held-out real glyphs, in the features of `eval/image_judge.py`'s CNN; the judge's accuracy on the
samples (does a sample show the class it was asked for); NFE; seconds per denoiser call and per
training step (timed in `measure`, one thread, on the same batch for every generator).

    unmask train glyphs-generators --out runs/glyph-gen
    unmask train glyphs-generators train.seed=1 --out runs/glyph-gen-1
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import int_list, option, section
from ..data import image_sets
from ..errors import UnmaskError
from ..eval.image_judge import JUDGE_STEPS, train_judge
from ..eval.quality import frechet_distance, precision_recall
from ..layout import Layout
from ..masking import CoarseToFineCorruption, CoarseToFineMask, RandomMask
from ..nn import ImageTokenizer, MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..sampling import MaskGITSampler, NextScaleSampler, PivotSampler, generate
from ..sampling.next_scale import scale_layout, scale_tokens
from ..sampling.pivot import pivot_layout, pivot_tokens
from ..schedules import Schedule
from ..train import TrainConfig
from .base import Recipe, TransformerSettings, memo
from .image_tokens import TokenizerSettings, load_tokenizer, stored_tokens, tokenizer_objective, train_tokenizer
from .report import Metric, Report, Table
from .run import Run

GENERATORS = ("maskgit", "himar", "hmar", "shuffle")
ROLE_OF = {"maskgit": "main", "himar": "himar", "hmar": "hmar", "shuffle": "shuffle"}
SET = "glyphs"
SIDES = (1, 2, 4, 8)  # HMAR's scales, tokens per side; the last is the tokenizer's grid
PIVOT_FACTOR = 2
QUALITY_K = 3
TITLES = {"maskgit": "MaskGIT", "himar": "Hi-MAR (pivots)", "hmar": "HMAR (next scale)",
          "shuffle": "Token-Shuffle (s=2)"}


@dataclass(frozen=True)
class Sampling:
    nfe: int = option(8, lo=2, help="denoiser calls per sample, the same for every generator")
    pivot_steps: int = option(2, lo=1, help="Hi-MAR: calls on the pivot grid (the rest go to the dense tokens)")
    scale_steps: str = option("1,1,2,4", help="HMAR: calls per scale 1x1, 2x2, 4x4, 8x8 (they must add up to nfe)")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature")
    choice_temperature: float = option(1.0, lo=0.0, help="MaskGIT choice noise")

    def scale_tuple(self) -> tuple[int, ...]:
        return int_list("sampler.scale_steps", self.scale_steps, lo=1, count=len(SIDES))


@dataclass(frozen=True)
class Eval:
    samples_per_class: int = option(2, lo=1, help="class-conditional samples per glyph class and generator")
    judge_steps: int = option(JUDGE_STEPS, lo=1, help="training steps of the judge CNN (eval/image_judge.py)")
    judge_seed: int = option(0, lo=0, help="seed of the judge, fixed across training seeds")
    timing_steps: int = option(5, lo=1, help="timed training steps per generator (after one untimed)")


@dataclass(frozen=True)
class Model(TransformerSettings):
    shuffle: int = option(2, choices=(2, 4), help="Token-Shuffle window of the `shuffle` generator")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=400, batch_size=64, lr=2e-3, warmup=40, log_every=50))
    model: Model = section(Model(dim=96, depth=3, heads=4))
    tokenizer: TokenizerSettings = section(TokenizerSettings())
    sampler: Sampling = section(Sampling())
    eval: Eval = section(Eval())


def encode_at(tokenizer: ImageTokenizer, images: torch.Tensor) -> torch.Tensor:
    """The tokenizer's encoder and quantizer (fully convolutional) on images of any size divisible by
    its stride: Float[B, C, H, W] in [0, 1] -> Long[B, H / stride, W / stride]."""
    with torch.no_grad():
        z = tokenizer.encoder(images * 2.0 - 1.0).permute(0, 2, 3, 1)  # as ImageTokenizer.quantize
        return tokenizer.quantizer(z).indices


class GlyphGenerators(Recipe):
    name = "glyphs-generators"
    papers = ("MaskGIT", "Hi-MAR", "HMAR", "Token-Shuffle")
    summary = ("class-conditional glyph tokens: MaskGIT, Hi-MAR pivots, HMAR next-scale and Token-Shuffle on one "
               "budget, at equal NFE, judged by a CNN's features")
    Settings = Settings
    roles = ("main", "himar", "hmar", "shuffle", "tokenizer")

    def check(self) -> None:
        s = self.settings.sampler
        if s.pivot_steps >= s.nfe:
            raise UnmaskError(f"sampler.pivot_steps={s.pivot_steps} must be below sampler.nfe={s.nfe}: the dense "
                              "tokens need a call too")
        if sum(s.scale_tuple()) != s.nfe:
            raise UnmaskError(f"sampler.scale_steps={s.scale_steps!r} adds up to {sum(s.scale_tuple())}, "
                              f"not sampler.nfe={s.nfe}")

    # sizes ------------------------------------------------------------------------------------------
    def classes(self) -> int:
        return len(image_sets.load(SET, "test").classes)

    def codes(self) -> int:
        return self.settings.tokenizer.config(32, 1).codebook_size

    def side(self) -> int:
        return 32 // self.settings.tokenizer.downsample

    def layout(self, generator: str) -> Layout:
        label, side = Layout.seq(1, "label"), self.side()
        if generator == "himar":
            return label + pivot_layout(side, side, PIVOT_FACTOR)
        if generator == "hmar":
            return scale_layout(self.sides(), prefix=label)
        return label + Layout.grid(side, side, name="dense")

    def sides(self) -> tuple[int, ...]:
        side = self.side()
        if side != SIDES[-1]:
            raise UnmaskError(f"HMAR's scales {SIDES} end at the 8 x 8 grid of tokenizer.downsample=4; "
                              f"tokenizer.downsample={self.settings.tokenizer.downsample} gives {side} x {side}")
        return SIDES

    def generator_config(self, generator: str) -> ModelConfig:
        m, codes = self.settings.model, self.codes()
        layout = self.layout(generator)
        vocab = {seg.name: (0, codes) for seg in layout.segments if seg.name != "label"}
        return ModelConfig(codes + self.classes(), layout, dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={"label": (codes, codes + self.classes()), **vocab},
                           attention="scale_causal" if generator == "hmar" else "full",
                           shuffle=m.shuffle if generator == "shuffle" else 1)

    def model_config(self) -> ModelConfig:
        return self.generator_config("maskgit")

    def model_dict(self) -> dict:
        return {g: self.generator_config(g).to_dict() for g in GENERATORS}

    # objectives -------------------------------------------------------------------------------------
    def build(self) -> MaskedTokenModeling:
        return self.generator_objective("maskgit")

    def build_role(self, role: str) -> nn.Module:
        if role == "tokenizer":
            return tokenizer_objective(self.settings.tokenizer, 32, 1)
        if role in ("himar", "hmar", "shuffle"):
            return self.generator_objective(role)
        return super().build_role(role)

    def generator_objective(self, generator: str) -> MaskedTokenModeling:
        config = self.generator_config(generator)
        model = MaskedTokenModel(config)
        if generator in ("maskgit", "shuffle"):
            return MaskedTokenModeling(model, RandomMask(("dense",)), Schedule("cosine"))
        stages = tuple(n for n in config.layout.names if n != "label")
        corruption = CoarseToFineCorruption(config.layout, stages) if generator == "himar" else None
        return MaskedTokenModeling(model, CoarseToFineMask(stages), Schedule("cosine"), corruption=corruption)

    # data -------------------------------------------------------------------------------------------
    def tokens(self, run: Run, tokenizer: ImageTokenizer, generator: str, split: str) -> torch.Tensor:
        """Long[M, N]: the label token, then the generator's token grids of the split's glyphs."""
        data = image_sets.load(SET, split)
        dense = stored_tokens(run, tokenizer, f"{SET}-{split}", data.images)  # [M, 64]
        x = data.images.float() / 255

        def coarse():
            if generator == "himar":
                return pivot_tokens(x, lambda im: encode_at(tokenizer, im), PIVOT_FACTOR).flatten(1)
            if generator == "hmar":
                stride = self.settings.tokenizer.downsample
                return torch.cat([t.flatten(1) for t in scale_tokens(x, lambda im: encode_at(tokenizer, im),
                                                                      self.sides()[:-1], stride)], 1)
            return dense[:, :0]

        key = ("glyph-coarse", str(run.folder.resolve()), run.sub("tokenizer").trained_step(), generator, split)
        label = data.labels[:, None] + self.codes()
        return torch.cat([label, memo(key, coarse), dense], 1)

    def training_data(self, run: Run) -> dict:
        """MaskGIT's rows (the tokenizer trained first when it is not yet)."""
        tokenizer = train_tokenizer(self, run, image_sets.load(SET, "train").images)
        return {"tokens": self.tokens(run, tokenizer, "maskgit", "train")}

    def train(self, run: Run) -> dict:
        """The tokenizer, then the four generators on the same budget, then the evaluation."""
        tokenizer = train_tokenizer(self, run, image_sets.load(SET, "train").images)
        main = None
        for generator in GENERATORS:
            role, where = ROLE_OF[generator], run if generator == "maskgit" else run.sub(generator)
            data = {"tokens": self.tokens(run, tokenizer, generator, "train")}
            trained = self.fit(where, self.objective(role), data, role=role)
            main = trained if generator == "maskgit" else main
        return self.evaluate(run, main)

    # sampling and measuring -------------------------------------------------------------------------
    def sampler(self, generator: str):
        s = self.settings.sampler
        inner = MaskGITSampler(s.nfe, temperature=s.temperature, choice_temperature=s.choice_temperature)
        if generator == "himar":
            pivots = 1 + self.layout("himar").segment("pivot").length
            return PivotSampler(MaskGITSampler(s.pivot_steps, temperature=s.temperature,
                                               choice_temperature=s.choice_temperature),
                                MaskGITSampler(s.nfe - s.pivot_steps, temperature=s.temperature,
                                               choice_temperature=s.choice_temperature), pivots)
        if generator == "hmar":
            lengths = tuple(seg.length for seg in self.layout("hmar").segments)  # label first: nothing hidden there
            return NextScaleSampler((1, *s.scale_tuple()), lengths, inner)
        return inner

    def draw(self, model: MaskedTokenModel, tokenizer: ImageTokenizer, generator: str, labels: torch.Tensor,
             g: torch.Generator) -> tuple[torch.Tensor, int, float]:
        """Class-conditional samples: (Uint8[M, 1, 32, 32] decoded images, NFE, seconds)."""
        n, mask_id = model.config.layout.n, model.mask_id
        canvas = torch.full((len(labels), n), mask_id, dtype=torch.long)
        canvas[:, 0] = labels + self.codes()
        start = time.perf_counter()
        out = generate(model.eval(), canvas, self.sampler(generator), mask_id=mask_id, generator=g)
        seconds = time.perf_counter() - start
        side = self.side()
        with torch.no_grad():
            pixels = tokenizer.decode(out.tokens[:, -side * side:].reshape(-1, side, side))
        return (pixels.clamp(0, 1) * 255).round().to(torch.uint8), out.nfe, seconds

    def step_seconds(self, objective: MaskedTokenModeling, tokens: torch.Tensor) -> float:
        """Seconds per training step (forward, backward, AdamW) on `train.batch_size` rows, on the
        weights given (a copy is stepped, so the evaluated model is left as it is)."""
        import copy

        objective = copy.deepcopy(objective).train()
        opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        batch = {"tokens": tokens[torch.randint(0, len(tokens), (self.settings.train.batch_size,), generator=g)]}
        times = []
        for _ in range(self.settings.eval.timing_steps + 1):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            objective(batch, g).loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return sorted(times[1:])[len(times[1:]) // 2]  # the median, the first (warm-up) step left out

    def measure(self, run: Run, objective: MaskedTokenModeling) -> dict:
        s = self.settings
        tokenizer = load_tokenizer(self, run)
        judge = train_judge(SET, s.eval.judge_seed, s.eval.judge_steps)
        train, test = image_sets.load(SET, "train"), image_sets.load(SET, "test")
        real = judge.features(test.images)
        metrics: dict = {"judge_accuracy": judge.accuracy}

        def quality(prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
            feats = judge.features(images)
            metrics[f"fd_{prefix}"] = frechet_distance(feats, real)
            metrics[f"precision_{prefix}"], metrics[f"recall_{prefix}"] = precision_recall(real, feats, QUALITY_K)
            metrics[f"class_acc_{prefix}"] = float((judge.predict(images) == labels).double().mean())

        quality("real_train", train.images, train.labels)
        recon = tokenizer.decode(stored_tokens(run, tokenizer, f"{SET}-test", test.images).reshape(-1, 8, 8))
        quality("reconstructed", (recon.clamp(0, 1) * 255).round().to(torch.uint8), test.labels)
        labels = torch.arange(self.classes()).repeat(s.eval.samples_per_class)
        shown = [test.images[:0]]
        for generator in GENERATORS:
            where = run if generator == "maskgit" else run.sub(generator)
            obj = objective if generator == "maskgit" else self.load(where, ROLE_OF[generator])
            g = torch.Generator().manual_seed(s.train.seed)
            images, nfe, seconds = self.draw(obj.model, tokenizer, generator, labels, g)
            quality(generator, images, labels)
            metrics[f"nfe_{generator}"] = nfe
            metrics[f"call_ms_{generator}"] = 1000 * seconds / nfe
            metrics[f"step_ms_{generator}"] = 1000 * self.step_seconds(obj, self.tokens(run, tokenizer, generator,
                                                                                        "train"))
            metrics[f"params_{generator}"] = sum(p.numel() for p in obj.model.parameters())
            shown.append(images[:16])
        metrics["samples_per_generator"], metrics["held_out_glyphs"] = len(labels), len(test.labels)
        real_row = torch.stack([test.images[test.labels == c][0] for c in range(16)])
        image_sets.save_grid(torch.cat([real_row, *shown[1:]]), run.file("samples.png"), 16)
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        tables = []
        for key, label, better in (("fd", "Fréchet distance to held-out glyphs (judge features)", "lower"),
                                   ("precision", "precision (k-NN manifold, k=3)", "higher"),
                                   ("recall", "recall (k-NN manifold, k=3)", "higher"),
                                   ("class_acc", "judge accuracy on samples (shows the asked class)", "higher"),
                                   ("call_ms", "milliseconds per denoiser call", "lower"),
                                   ("step_ms", "milliseconds per training step", "lower")):
            rows = [Metric(f"{key}_maskgit", f"{TITLES['maskgit']}")]
            rows += [Metric(f"{key}_{g}", TITLES[g], f"{key}_maskgit", better) for g in GENERATORS[1:]]
            if key in ("fd", "precision", "recall", "class_acc"):
                rows += [Metric(f"{key}_real_train", "real training glyphs (reference)"),
                         Metric(f"{key}_reconstructed", "held-out glyphs through the tokenizer (reference)")]
            tables.append(Table(tuple(rows), label))
        tables.append(Table(tuple(Metric(f"nfe_{g}", TITLES[g]) for g in GENERATORS), "denoiser calls per sample"))
        tables.append(Table(tuple(Metric(f"params_{g}", TITLES[g]) for g in GENERATORS) + (
            Metric("judge_accuracy", "judge accuracy on held-out real glyphs"),
            Metric("samples_per_generator", "samples per generator"),
            Metric("held_out_glyphs", "held-out real glyphs")), "sizes"))
        setup = (f"{self.setup()} Each generator trains {s.train.steps} steps; samples at {s.sampler.nfe} denoiser "
                 f"calls (Hi-MAR {s.sampler.pivot_steps} on pivots, HMAR {s.sampler.scale_steps} per scale), "
                 f"{s.eval.samples_per_class} per class, temperature {s.sampler.temperature}. Tokenizer "
                 f"{s.tokenizer.quantizer} ({self.codes()} codes, {s.tokenizer.steps} steps). Judge: "
                 f"eval/image_judge.py, {s.eval.judge_steps} steps, seed {s.eval.judge_seed}.")
        return Report("glyphs-generators: MaskGIT, Hi-MAR, HMAR and Token-Shuffle at equal NFE", setup,
                      tuple(tables), (("rows: held-out real, MaskGIT, Hi-MAR, HMAR, Token-Shuffle; "
                                       "columns: the first 16 classes", "samples.png"),))

    @torch.no_grad()
    def sample(self, run: Run, objective: MaskedTokenModeling, n: int, out) -> Path:
        """n class-conditional MaskGIT samples (classes in turn), drawn into a PNG grid of 16 columns."""
        labels = torch.arange(n) % self.classes()
        g = torch.Generator().manual_seed(self.settings.train.seed)
        images, _, _ = self.draw(objective.model, load_tokenizer(self, run), "maskgit", labels, g)
        out = self.sample_path(out)
        image_sets.save_grid(images, out, min(n, 16))
        return out
