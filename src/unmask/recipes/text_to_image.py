"""What the text-to-image recipes (`glyphs`, `emoji`) share: Meissonic-style masked generation of
image tokens from a text prompt (Bai et al. 2024, arXiv:2410.08261), at the scale of 32 x 32 images.

An image tokenizer (`recipes/image_tokens.py`, role `tokenizer`) is trained first; then one masked
token model reads [prompt words | 8 x 8 image tokens]: the prompt is the image's class name as word
tokens (`nn/text_condition.py`), never hidden; image tokens are hidden by a cosine-drawn count; the
mask ratio enters as the network's timestep; the prompt is dropped (null prompt) in a share of the
rows (`objectives/text_to_image.py`), so classifier-free guidance works at sampling
(`sampling/guidance.py`, its unconditional branch hides the prompt).

Guidance is written `eval.guidance = w` in the form l_c + w (l_c - l_u) (ENAT, Halton MaskGIT; w = 0 is
the plain conditional sampler; Meissonic's own scale is s = 1 + w). `measure` draws the same prompts
with w = 0 and with w = `eval.guidance` and scores both against real images with the shared judge
(`eval/image_judge.py`): Frechet distance, precision and recall in its feature space, and the share
of samples it classifies as the prompt's class.

    unmask train glyphs --out runs/glyphs
    unmask sample runs/glyphs --prompt "LATIN SMALL LETTER A" --n 16   # runs/glyphs/samples.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..config import option, section
from ..data import image_sets
from ..errors import UnmaskError
from ..eval.image_judge import JUDGE_STEPS, train_judge
from ..eval.quality import frechet_distance, precision_recall
from ..eval.tokenizer import tokenize
from ..layout import Layout
from ..nn import MaskedTokenModel, ModelConfig
from ..nn.text_condition import UnknownWords, WordVocab
from ..objectives.text_to_image import IMAGE, PROMPT, text_to_image
from ..sampling import generate
from ..sampling.guidance import ClassifierFreeGuidance, GuidanceSchedule, guidance_scale
from ..schedules import SCHEDULES
from ..train import TrainConfig
from .base import Recipe, SamplerSettings, TransformerSettings, memo
from .image_tokens import ROLE, TokenizerSettings, load_tokenizer, stored_tokens, tokenizer_objective, train_tokenizer
from .report import Metric, Report, Table
from .run import Run

SIZE = 32
QUALITY_K = 3  # neighbours of the precision / recall manifolds
JUDGE_SEED = 0  # one judge for every run, so seeds of a recipe are measured in the same feature space


@dataclass(frozen=True)
class Conditioning:
    prompt_dropout: float = option(0.1, lo=0.0, hi=1.0, help="share of training rows whose prompt is dropped (the "
                                   "null prompt), so the same network is the unconditional model of guidance")
    schedule: str = option("cosine", choices=SCHEDULES, help="training mask-ratio schedule")


@dataclass(frozen=True)
class Eval:
    guidance: float = option(3.0, lo=0.0, help="classifier-free guidance w in l_c + w (l_c - l_u) used by eval and "
                             "sample; eval also measures w = 0 (no guidance)")
    draws: int = option(2, lo=1, help="samples per reference image")
    references: int = option(400, lo=QUALITY_K + 1, help="most real reference images (the first ones of a fixed "
                             "shuffle of the reference split)")
    grid_prompts: int = option(8, lo=1, hi=64, help="prompts (rows) of samples.png")
    grid_columns: int = option(4, lo=1, hi=16, help="images per prompt in each part of samples.png")
    batch_size: int = option(256, lo=1, help="canvases per generate call")
    judge_steps: int = option(JUDGE_STEPS, lo=1, help="training steps of the judge (eval/image_judge.py), whose "
                              "features are the metric space: compare runs only at equal steps")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=800, batch_size=64, lr=1e-3, warmup=80))
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=4, heads=4))
    tokenizer: TokenizerSettings = section(TokenizerSettings(steps=400))
    objective: Conditioning = section(Conditioning())
    sampler: SamplerSettings = section(SamplerSettings("maskgit", 12))
    eval: Eval = section(Eval())


def sample_tokens(model, prompts: torch.Tensor, n_image: int, sampler, guidance: float, generator,
                  batch: int = 256) -> tuple[torch.Tensor, int]:
    """prompts: Long[B, L] word ids of the model's vocabulary -> (Long[B, L + n_image] with every image
    token drawn, denoiser calls of the first batch). The prompt positions are given and never change;
    guidance w > 0 reads the model a second time with the prompt hidden (the null prompt)."""
    b, length = prompts.shape
    mask_id = model.mask_id
    canvas = torch.cat([prompts, torch.full((b, n_image), mask_id, dtype=torch.long)], dim=1)
    hide = torch.zeros(length + n_image, dtype=torch.bool)
    hide[:length] = True
    denoiser = ClassifierFreeGuidance(model, GuidanceSchedule("constant", guidance_scale(guidance, "c+w")),
                                      hide=hide, mask_id=mask_id)
    outs, nfe = [], None
    for chunk in canvas.split(batch):
        out = generate(denoiser, chunk, sampler, mask_id=mask_id, generator=generator)
        outs.append(out.tokens)
        nfe = out.nfe if nfe is None else nfe
    return torch.cat(outs), nfe


class TextToImage(Recipe):
    """A text-to-image recipe over one image set of `data.image_sets`; a subclass names it."""
    data_name: ClassVar[str]
    channels: ClassVar[int]
    papers = ("P47",)
    roles = ("main", ROLE)
    takes_prompt = True
    Settings = Settings

    # data and vocabulary ---------------------------------------------------------------------
    def split(self, split: str) -> image_sets.ImageSet:
        return memo(("image-set", self.data_name, split), lambda: image_sets.load(self.data_name, split, SIZE))

    def prompts(self) -> tuple[str, ...]:
        """The class names of the train split (the prompts the model learns), in class order."""
        train = self.split("train")
        return tuple(train.classes[c] for c in train.labels.unique().tolist())

    def vocab(self) -> WordVocab:
        return memo(("word-vocab", self.data_name), lambda: WordVocab.from_prompts(self.prompts()))

    def prompt_length(self) -> int:
        return self.vocab().longest(self.prompts())

    def codes(self) -> int:
        return self.settings.tokenizer.config(SIZE, self.channels).codebook_size

    def image_grid(self) -> tuple[int, int]:
        return self.settings.tokenizer.config(SIZE, self.channels).grid

    def encode(self, prompts: list[str], strict: bool = True) -> torch.Tensor:
        """Prompts -> Long[B, L] ids of the model's vocabulary (words after the image codes); an unknown
        word is an UnmaskError that lists a few known prompts."""
        try:
            words = self.vocab().encode(prompts, self.prompt_length(), strict)
        except UnknownWords as e:
            known = self.prompts()
            shown = ", ".join(repr(p) for p in known[:: max(1, len(known) // 5)][:5])
            raise UnmaskError(f"{e}; known prompts include {shown} ({len(known)} in all)") from None
        return words + self.codes()

    # model ---------------------------------------------------------------------------------------
    def model_config(self) -> ModelConfig:
        m, k, words = self.settings.model, self.codes(), len(self.vocab())
        layout = Layout.seq(self.prompt_length(), name=PROMPT) + Layout.grid(*self.image_grid(), name=IMAGE)
        return ModelConfig(k + words, layout, dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={PROMPT: (k, k + words), IMAGE: (0, k)}, ratio_input=IMAGE)

    def build(self):
        o = self.settings.objective
        return text_to_image(MaskedTokenModel(self.model_config()), o.prompt_dropout, o.schedule)

    def build_role(self, role: str):
        if role == ROLE:
            return tokenizer_objective(self.settings.tokenizer, SIZE, self.channels)
        return super().build_role(role)

    def training_data(self, run: Run) -> dict:
        train = self.split("train")
        tokenizer = train_tokenizer(self, run, train.images)
        image = stored_tokens(run, tokenizer, "train", train.images)
        prompt = self.encode([train.classes[c] for c in train.labels.tolist()])
        return {"tokens": torch.cat([prompt, image], dim=1)}

    # evaluation ----------------------------------------------------------------------------------
    def references(self) -> image_sets.ImageSet:
        """The real images samples are compared with: the held-out split, or for `emoji` (every emoji its
        own class, none of the held-out classes seen) the train split; at most `eval.references` of them."""
        ref = self.split("train" if self.data_name == "emoji" else "test")
        keep = torch.zeros(len(ref), dtype=torch.bool)
        order = torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))
        keep[order[: self.settings.eval.references]] = True
        return ref.take(keep)

    @torch.no_grad()
    def draw(self, model, tokenizer, prompts: list[str], guidance: float, seed: int) -> tuple[torch.Tensor, int]:
        """Uint8[B, C, 32, 32] images for `prompts`, and the denoiser calls per canvas."""
        h, w = self.image_grid()
        g = torch.Generator().manual_seed(seed)
        tokens, nfe = sample_tokens(model.eval(), self.encode(prompts), h * w, self.settings.sampler.build(),
                                    guidance, g, self.settings.eval.batch_size)
        image = tokens[:, self.prompt_length():].reshape(-1, h, w)
        with torch.inference_mode():
            pixels = torch.cat([tokenizer.decode(part) for part in image.split(self.settings.eval.batch_size)])
        return (pixels.clamp(0, 1) * 255).round().to(torch.uint8), nfe

    def measure(self, run: Run, objective) -> dict:
        s, e = self.settings, self.settings.eval
        tokenizer, judge = load_tokenizer(self, run), train_judge(self.data_name, JUDGE_SEED, e.judge_steps)
        ref = self.references()
        labels = ref.labels.repeat(e.draws)
        real = judge.features(ref.images)
        metrics: dict = {"judge_test_accuracy": judge.accuracy, "reference_images": len(ref), "samples": len(labels),
                         "judge_accuracy_real": float((judge.predict(ref.images) == ref.labels).double().mean())}
        rebuilt = (tokenizer.decode(tokenize(tokenizer, ref.images)).clamp(0, 1) * 255).round().to(torch.uint8)
        metrics["judge_accuracy_reconstructed"] = float((judge.predict(rebuilt) == ref.labels).double().mean())
        metrics["frechet_distance_reconstructed"] = frechet_distance(judge.features(rebuilt), real)
        for key, w in (("plain", 0.0), ("guided", e.guidance)):
            images, nfe = self.draw(objective.model, tokenizer, [ref.classes[c] for c in labels.tolist()], w,
                                    s.train.seed)
            fake = judge.features(images)
            precision, recall = precision_recall(real, fake, QUALITY_K)
            metrics |= {f"judge_accuracy_{key}": float((judge.predict(images) == labels).double().mean()),
                        f"frechet_distance_{key}": frechet_distance(fake, real),
                        f"precision_{key}": precision, f"recall_{key}": recall, f"nfe_{key}": nfe}
        self.grid(run, objective.model, tokenizer)
        return metrics

    def grid_prompts(self) -> list[str]:
        """`eval.grid_prompts` train prompts, evenly spaced in class order."""
        known, k = self.prompts(), self.settings.eval.grid_prompts
        return [known[round(i * (len(known) - 1) / max(1, k - 1))] for i in range(min(k, len(known)))]

    def grid(self, run: Run, model, tokenizer) -> None:
        """samples.png: a row per fixed prompt: real images of its class, samples without guidance,
        samples with guidance (`eval.grid_columns` each)."""
        e, cols = self.settings.eval, self.settings.eval.grid_columns
        prompts = self.grid_prompts()
        pool = self.split("train" if self.data_name == "emoji" else "test")
        asked = [p for p in prompts for _ in range(cols)]
        plain, _ = self.draw(model, tokenizer, asked, 0.0, self.settings.train.seed)
        guided, _ = self.draw(model, tokenizer, asked, e.guidance, self.settings.train.seed)
        rows = []
        for i, p in enumerate(prompts):
            mine = pool.images[pool.labels == pool.classes.index(p)]
            real = mine[torch.arange(cols) % len(mine)] if len(mine) else torch.full_like(plain[:cols], 128)
            rows += [real, plain[i * cols:(i + 1) * cols], guided[i * cols:(i + 1) * cols]]
        image_sets.save_grid(torch.cat(rows), run.file("samples.png"), 3 * cols)
        run.write_json("grid_prompts.json", prompts)

    def report(self, metrics: dict) -> Report:
        e = self.settings.eval
        w = e.guidance
        where = ("train-split emoji (every emoji is its own class, so no held-out emoji has a prompt the model or "
                 "the judge has seen)" if self.data_name == "emoji" else "held-out renders (fonts not trained on)")
        compared = Table((
            Metric("judge_accuracy_guided", f"judge accuracy, guided (w = {w})", "judge_accuracy_plain", "higher"),
            Metric("judge_accuracy_plain", "judge accuracy, no guidance (w = 0)"),
            Metric("frechet_distance_guided", f"Frechet distance, guided (w = {w})", "frechet_distance_plain", "lower"),
            Metric("frechet_distance_plain", "Frechet distance, no guidance (w = 0)"),
            Metric("precision_guided", f"precision, guided (w = {w})", "precision_plain", "higher"),
            Metric("precision_plain", "precision, no guidance (w = 0)"),
            Metric("recall_guided", f"recall, guided (w = {w})", "recall_plain", "higher"),
            Metric("recall_plain", "recall, no guidance (w = 0)"),
            Metric("nfe_guided", "denoiser calls per canvas, guided (each reads the network twice)"),
            Metric("nfe_plain", "denoiser calls per canvas, no guidance"),
        ), "with and without classifier-free guidance",
            f"{metrics.get('samples', '?')} samples ({e.draws} per reference image, each asked for that image's class) "
            f"against {metrics.get('reference_images', '?')} real {where}, in the judge's feature space "
            f"(`eval/image_judge.py`, seed {JUDGE_SEED}, {e.judge_steps} steps); "
            f"precision and recall with k = {QUALITY_K}.")
        ceilings = Table((
            Metric("judge_accuracy_real", "judge accuracy on the real reference images"),
            Metric("judge_accuracy_reconstructed", "judge accuracy on the reference images through the tokenizer"),
            Metric("frechet_distance_reconstructed", "Frechet distance of the tokenizer's reconstructions"),
            Metric("judge_test_accuracy", "the judge's own accuracy (held-out renders; emoji: shifted train images)"),
        ), "what the samples can reach")
        t = self.settings.tokenizer
        setup = (f"{self.setup()} Tokenizer: {t.quantizer.upper()} ({self.codes()} codes, "
                 f"{'x'.join(map(str, self.image_grid()))} tokens), {t.steps} steps. Prompt: up to "
                 f"{self.prompt_length()} words of {len(self.vocab()) - 2} (the train split's class names), dropped "
                 f"in {self.settings.objective.prompt_dropout:.0%} of the training rows. Sampler "
                 f"`{self.settings.sampler.name}`, {self.settings.sampler.steps} steps.")
        notes = ("samples.png, a row per prompt (`grid_prompts.json`, in order): real images of the class, samples "
                 f"without guidance, samples with guidance w = {w}.",)
        if self.data_name == "emoji":
            notes += ("Emoji are evaluated on train-split prompts: each emoji is its own class, so the held-out emoji "
                      "have prompts the model never read and classes the judge cannot tell.",)
        return Report(f"{self.name}: text-to-image masked generation with and without guidance", setup,
                      (compared, ceilings), (("real / no guidance / guided, a row per prompt", "samples.png"),), notes)

    def sample(self, run: Run, objective, n: int, out: Path, prompt: str | None = None) -> Path:
        """n samples with guidance `eval.guidance`: all of `prompt`, or the fixed prompts in turn; a PNG
        grid of 8 columns (fewer when n is smaller)."""
        fixed = self.grid_prompts()
        asked = [prompt] * n if prompt is not None else [fixed[i % len(fixed)] for i in range(n)]
        self.encode(asked[:1])  # an unknown word is refused before the tokenizer is loaded
        images, _ = self.draw(objective.model, load_tokenizer(self, run), asked, self.settings.eval.guidance,
                              self.settings.train.seed)
        out = self.sample_path(out)
        image_sets.save_grid(images, out, min(n, 8))
        return out
