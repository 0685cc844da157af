"""Recipe `reasoning`: a masked diffusion language model fine-tuned on verifiable reasoning made at run
time (`data/reasoning.py`: arithmetic with every step written, or 4x4 Sudoku), with the prompt given
and the answer hidden at rate t (LLaDA's SFT, Nie et al. 2025, arXiv:2502.09992; `MaskedDiffusion`).
Evaluation answers held-out prompts at temperature 0 with each block sampler — LLaDA's low-confidence
remasking, Fast-dLLM's confidence threshold (Wu et al. 2025, arXiv:2505.22618), dParallel's entropy
threshold (Chen et al. 2025, arXiv:2509.26488, P8), MDPO's running-confidence remasking (He et al.
2025, arXiv:2508.13148, P6), Dream's entropy order (Ye et al. 2025, arXiv:2508.15487), and MaskGIT,
ancestral and first-hitting — and scores each by the task's exact checker and by denoiser calls per
answer, beside the same model filling the whole answer in one call.

Beside it, on the same rows and network size, two autoregressive models (a causal mask on the same
Transformer) trained for `ar.steps` steps each, greedy-decoded and checked alike: plain SFT in
`RUN/ar`, and Masked Thought in `RUN/masked-thought` (Chen et al. 2024, arXiv:2403.02178, P44:
answer-side inputs masked with a rate ramped to 0.4, labels clean). The three models train one after
the other in one process. The defaults (width 64, 4000 diffusion steps, 1500 per AR model, 3-operand
arithmetic) take about 5.5 CPU-minutes on one thread; the diffusion model needs the longer training
(docs/reasoning.md has the figures).

    unmask train reasoning --out runs/reasoning
    unmask train reasoning data.task=sudoku --out runs/sudoku
    unmask eval runs/reasoning sampler.block_length=4 sampler.threshold=0.8
    unmask sample runs/reasoning --n 20          # runs/reasoning/samples.txt: prompt, answer, correct
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import option, section
from ..data import reasoning
from ..errors import UnmaskError
from ..eval.reasoning import diffusion_answers, greedy_answers
from ..masking.masked_thought import MaskedThought
from ..nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from ..objectives import MaskedDiffusion, NextTokenPrediction
from ..objectives.certainty_forcing import CertaintyForcing
from ..objectives.mdpo import MDPO
from ..sampling import BlockCached, DreamSampler, LLaDASampler, RCRSampler, ThresholdSampler
from ..sampling.named import NAMES, named_sampler
from ..schedules import Schedule
from ..train import TrainConfig
from .base import Recipe, TransformerSettings, memo
from .reasoning_post import POST_ROLES, checker_reward, first, own_answers
from .report import Metric, Report, Table

SAMPLERS = ("llada", "threshold", "threshold-prefix", "threshold-dual", "entropy-threshold", "rcr", "dream", *NAMES)
BASELINE = "one-step"  # the whole answer from one call: what the iterative samplers must beat
AR_ROLES = ("ar", "masked-thought")


@dataclass(frozen=True)
class Data:
    task: str = option("arith", choices=reasoning.TASKS, help="arith: arithmetic with written steps; sudoku: 4x4")
    operands: int = option(3, lo=2, hi=8, help="arith: operands per prompt (steps: one fewer)")
    max_operand: int = option(9, lo=1, hi=99, help="arith: operands are drawn from 0..max_operand")
    max_blanks: int = option(16, lo=1, hi=16, help="sudoku: most blank cells (fewer where one more blank would "
                                                   "allow a second solution)")
    train_size: int = option(20000, lo=1, help="training examples (prompts may repeat)")
    test_size: int = option(200, lo=1, help="held-out prompts: distinct, none of them in training")
    seed: int = option(0, lo=0, help="seed of the examples")


@dataclass(frozen=True)
class Sampler:
    name: str = option("llada", choices=SAMPLERS, help="the sampler of `unmask sample` (eval decodes with each)")
    block_length: int = option(8, lo=0, help="semi-autoregressive block (LLaDA, threshold, RCR); 0: one block")
    steps_per_block: int = option(8, lo=1, help="steps per block (LLaDA, RCR); MaskGIT, ancestral and Dream take "
                                                "as many in all")
    threshold: float = option(0.9, lo=0.0, hi=1.0, lo_open=True,
                              help="Fast-dLLM: commit each place whose proposal has at least this probability")
    entropy_threshold: float = option(0.5, lo=0.0, help="dParallel: commit each place whose entropy is at most "
                                                        "this many nats")

    def blocks(self, answer_length: int) -> int:
        return math.ceil(answer_length / self.block_length) if self.block_length else 1

    def samplers(self, answer_length: int) -> dict:
        """Every sampler at temperature 0 for answers of `answer_length` places, and the one-call baseline."""
        block = self.block_length or None
        steps = self.steps_per_block * self.blocks(answer_length)
        made = {
            "llada": LLaDASampler(steps, block, "low_confidence", 0.0),
            "threshold": ThresholdSampler(self.threshold, "confidence", block, 0.0),
            "threshold-prefix": BlockCached(ThresholdSampler(self.threshold, "confidence", block, 0.0), "prefix"),
            "threshold-dual": BlockCached(ThresholdSampler(self.threshold, "confidence", block, 0.0), "dual"),
            "entropy-threshold": ThresholdSampler(self.entropy_threshold, "entropy", block, 0.0),
            "rcr": RCRSampler(steps, block, Schedule("linear"), 0.0),
            "dream": DreamSampler(steps, "entropy", 0.0, 0.0, 1.0),
            **{name: named_sampler(name, steps, 0.0, 0.0) for name in NAMES},
        }
        return {**made, BASELINE: LLaDASampler(1, None, "low_confidence", 0.0)}


@dataclass(frozen=True)
class Eval:
    batch_size: int = option(256, lo=1, help="held-out prompts decoded at once")
    shown: int = option(4, lo=0, help="decoded answers shown in the report")


@dataclass(frozen=True)
class Ar:
    train: bool = option(True, help="also train the two autoregressive models")
    steps: int = option(1500, lo=0, help="optimizer steps of each AR model (the rest of `train` as set there); "
                                         "0: train.steps")
    max_rate: float = option(0.4, lo=0.0, hi=1.0, help="Masked Thought: the mask rate the ramp reaches")
    warmup_ratio: float = option(2 / 3, lo=0.0, lo_open=True, help="Masked Thought: the share of the AR steps "
                                                                     "the ramp takes")


@dataclass(frozen=True)
class Post:
    mdpo_steps: int = option(0, lo=0, help="MDPO steps from the SFT weights (RUN/mdpo); 0: none")
    mdpo_prompts: int = option(8, lo=1, help="MDPO: training prompts per step")
    mdpo_group: int = option(4, lo=2, help="MDPO: rollouts per prompt, compared with each other")
    mdpo_temperature: float = option(1.0, lo=0.0, lo_open=True, help="MDPO: proposal temperature of the rollouts")
    lr: float = option(2e-4, lo=0.0, lo_open=True, help="learning rate of both post-training stages")
    dparallel_steps: int = option(0, lo=0, help="certainty-forcing steps from the SFT weights (RUN/dparallel); "
                                                "0: none")
    distill_prompts: int = option(2000, lo=1, help="dParallel: training prompts the SFT model answers to "
                                                   "train on")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=4000, batch_size=64, lr=1e-3, warmup=50, log_every=100),
                                 help="the diffusion model's training; the AR models' too, but for `ar.steps` steps")
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=4, heads=4))
    data: Data = section(Data())
    sampler: Sampler = section(Sampler(), help="eval decodes with every sampler; `unmask sample` with `name`")
    eval: Eval = section(Eval())
    ar: Ar = section(Ar(), help="the autoregressive baselines: plain SFT (RUN/ar) and Masked Thought "
                                "(RUN/masked-thought)")
    post: Post = section(Post(), help="post-training of the SFT model: MDPO (RUN/mdpo) and dParallel "
                                      "(RUN/dparallel)")


class Reasoning(Recipe):
    name = "reasoning"
    papers = ("P44", "P6", "P8")
    summary = ("masked diffusion SFT on verifiable reasoning (arithmetic with steps, 4x4 Sudoku): exact accuracy "
               "and NFE of block samplers; AR baselines, plain SFT and Masked Thought")
    Settings = Settings
    sample_suffix = ".txt"
    roles = ("main", *AR_ROLES, *POST_ROLES)

    def task(self) -> reasoning.Task:
        d = self.settings.data
        return reasoning.task(d.task, operands=d.operands, max_operand=d.max_operand, max_blanks=d.max_blanks)

    def data(self) -> reasoning.ReasoningData:
        """The examples, made once per process for each data setting."""
        d = self.settings.data
        return memo(("reasoning", d), lambda: reasoning.make(
            d.task, d.train_size, d.test_size, d.seed, **self._sizes()))

    def _sizes(self) -> dict:
        d = self.settings.data
        return {"operands": d.operands, "max_operand": d.max_operand} if d.task == "arith" else \
            {"max_blanks": d.max_blanks}

    def model_config(self) -> ModelConfig:
        m, t = self.settings.model, self.task()
        return ModelConfig(len(t.vocab), t.layout(), dim=m.dim, depth=m.depth, heads=m.heads)

    def build(self) -> MaskedDiffusion:
        return MaskedDiffusion(MaskedTokenModel(self.model_config()))

    def build_role(self, role: str) -> nn.Module:
        """The AR models start each row from the pad token, so the mask id stays Masked Thought's. The
        post-training roles hold a diffusion model like the main one (`train` starts it from its weights)."""
        s = self.settings
        if role == "mdpo":
            t = self.task()
            steps = s.sampler.steps_per_block * s.sampler.blocks(t.answer_length)
            rollout = LLaDASampler(steps, s.sampler.block_length or None, "low_confidence", s.post.mdpo_temperature)
            return MDPO(MaskedTokenModel(self.model_config()), rollout, checker_reward(t), group=s.post.mdpo_group)
        if role == "dparallel":
            block = s.sampler.block_length or self.task().answer_length
            return CertaintyForcing(MaskedTokenModel(self.model_config()), block_length=block)
        if role not in AR_ROLES:
            return super().build_role(role)
        a = self.settings.ar
        thought = MaskedThought(self.ar_train().steps, a.max_rate, a.warmup_ratio) if role == "masked-thought" else None
        return NextTokenPrediction(CausalTokenModel(self.model_config()), bos_id=self.task().pad_id, thought=thought)

    def ar_train(self) -> TrainConfig:
        """The AR models' training: `train` with `ar.steps` steps."""
        return dataclasses.replace(self.settings.train, steps=self.settings.ar.steps or self.settings.train.steps)

    def training_data(self, run) -> dict:
        return self.data().train.data()

    def train(self, run) -> dict:
        """The diffusion model, then (with `ar.train`) the two AR models, then the evaluation."""
        data = self.training_data(run)
        objective = self.fit(run, self.objective(), data)
        if self.settings.ar.train:
            for role in AR_ROLES:
                self.fit(run.sub(role), self.objective(role), data, role=role, train=self.ar_train())
        for role in POST_ROLES:
            self.post_train(run, objective, role)
        return self.evaluate(run, objective)

    def post_train(self, run, sft: MaskedDiffusion, role: str) -> None:
        """Train `role` from the SFT model's weights, when its steps are set."""
        s = self.settings
        steps = s.post.mdpo_steps if role == "mdpo" else s.post.dparallel_steps
        if not steps:
            return
        post = self.objective(role)
        post.model.load_state_dict(sft.model.state_dict())
        made = self.data()
        if role == "mdpo":
            data, batch = made.train.data(), s.post.mdpo_prompts
        else:  # the SFT model's own answers, decoded as it is evaluated (LLaDA)
            sampler = s.sampler.samplers(made.task.answer_length)["llada"]
            prompts = first(made.train, s.post.distill_prompts)
            data = own_answers(sft.model.eval(), made.task, prompts, sampler, s.train.seed, s.eval.batch_size).data()
            batch = s.train.batch_size
        train = dataclasses.replace(s.train, steps=steps, batch_size=batch, lr=s.post.lr, warmup=0)
        self.fit(run.sub(role), post, data, role=role, train=train)

    def measure(self, run, objective: MaskedDiffusion) -> dict:
        s, made = self.settings, self.data()
        t, test = made.task, made.test
        model = objective.model.eval()
        metrics: dict = {"train_examples": len(made.train), "test_prompts": len(test),
                         "prompt_length": t.prompt_length, "answer_length": t.answer_length}
        shown = []
        for name, sampler in s.sampler.samplers(t.answer_length).items():
            res = diffusion_answers(model, t, test, sampler, s.train.seed, s.eval.batch_size)
            metrics[f"acc_{name}"], metrics[f"nfe_{name}"] = res.accuracy, res.mean_nfe
            if getattr(sampler, "requires_cache", False):
                metrics[f"light_{name}"] = res.mean_light
            if name == s.sampler.name:
                shown = [(p, a, ok) for p, a, ok in zip(test.prompts, res.answers, res.correct, strict=True)]
        for role in AR_ROLES:
            if s.ar.train and run.sub(role).trained_step() is not None:
                ar = self.load(run.sub(role), role).model
                res = greedy_answers(ar, t, test, t.pad_id, s.eval.batch_size)
                metrics[f"acc_{role}"], metrics[f"nfe_{role}"] = res.accuracy, res.mean_nfe
        metrics.update(self.measure_post(run))
        run.write_json("answers.json", [{"prompt": p, "answer": a, "correct": ok} for p, a, ok in shown])
        self.shown = shown[: s.eval.shown]  # for the report's notes
        return metrics

    def measure_post(self, run) -> dict:
        """Each trained post-training model on the held-out prompts: MDPO with LLaDA and RCR decoding,
        dParallel with the entropy and confidence thresholds (its calls per answer are the claim)."""
        s, made, metrics = self.settings, self.data(), {}
        samplers = s.sampler.samplers(made.task.answer_length)
        for role, names in (("mdpo", ("llada", "rcr")), ("dparallel", ("entropy-threshold", "threshold"))):
            if run.sub(role).trained_step() is None:
                continue
            model = self.load(run.sub(role), role).model
            for name in names:
                res = diffusion_answers(model, made.task, made.test, samplers[name], s.train.seed, s.eval.batch_size)
                metrics[f"acc_{role}_{name}"], metrics[f"nfe_{role}_{name}"] = res.accuracy, res.mean_nfe
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        names = [n for n in self.settings.sampler.samplers(1) if n != BASELINE]
        diffusion = Table((
            Metric(f"acc_{BASELINE}", "exact accuracy, the whole answer from one call (baseline)"),
            *(Metric(f"acc_{n}", f"exact accuracy, `{n}`", f"acc_{BASELINE}", "higher") for n in names),
            *(Metric(f"nfe_{n}", f"denoiser calls per answer, `{n}`", "answer_length", "lower") for n in names),
            *(Metric(f"light_{n}", f"light reads per answer (the current block against cached K/V), `{n}`")
              for n in names if n.startswith("threshold-")),
        ), f"Masked diffusion: held-out prompts answered at temperature 0 (block length {s.sampler.block_length}, "
           f"{s.sampler.steps_per_block} steps per block)",
            "An answer counts when the task's checker accepts it: every written step and the result for arith, a "
            "valid grid that keeps the given cells for sudoku. Calls per answer beside one call per answer token.")
        ar = Table((
            Metric("acc_ar", "exact accuracy, plain SFT"),
            Metric("acc_masked-thought", "exact accuracy, Masked Thought", "acc_ar", "higher"),
            Metric("nfe_ar", "model calls per answer (one per token)"),
        ), f"Autoregressive models, {self.ar_train().steps} steps each (greedy decoding)",
            f"Same rows, width and depth, a causal mask; Masked Thought masks answer-side inputs with a rate ramped "
            f"to {s.ar.max_rate} over {s.ar.warmup_ratio:.3g} of the steps.")
        post = Table((
            Metric("acc_mdpo_llada", "exact accuracy, MDPO model, LLaDA decoding", "acc_llada", "higher"),
            Metric("acc_mdpo_rcr", "exact accuracy, MDPO model, RCR decoding", "acc_rcr", "higher"),
            Metric("acc_dparallel_entropy-threshold", "exact accuracy, dParallel model, entropy threshold",
                   "acc_entropy-threshold", "higher"),
            Metric("nfe_dparallel_entropy-threshold", "calls per answer, dParallel model, entropy threshold",
                   "nfe_entropy-threshold", "lower"),
            Metric("acc_dparallel_threshold", "exact accuracy, dParallel model, confidence threshold",
                   "acc_threshold", "higher"),
            Metric("nfe_dparallel_threshold", "calls per answer, dParallel model, confidence threshold",
                   "nfe_threshold", "lower"),
        ), "Post-training from the SFT weights (when `post.mdpo_steps` / `post.dparallel_steps` are set)",
            f"MDPO: {s.post.mdpo_steps} steps of {s.post.mdpo_prompts} prompts x {s.post.mdpo_group} rollouts; "
            f"dParallel: {s.post.dparallel_steps} steps on the SFT model's answers to {s.post.distill_prompts} "
            "training prompts. Baselines: the SFT model decoded the same way.")
        data = Table(tuple(Metric(k) for k in ("train_examples", "test_prompts", "prompt_length", "answer_length")),
                     "Data")
        return Report("reasoning: masked diffusion and autoregressive SFT on verifiable reasoning", self.setup(),
                      (diffusion, ar, post, data), notes=self.shown_notes())

    def shown_notes(self) -> tuple[str, ...]:
        """The first held-out answers of `sampler.name` that `measure` decoded (all in answers.json)."""
        shown = getattr(self, "shown", ())
        if not shown:
            return ()
        lines = [f"First held-out answers of `{self.settings.sampler.name}` (all in `answers.json`):", ""]
        lines += [f"- `{p}` -> `{a}` ({'correct' if ok else 'wrong'})" for p, a, ok in shown]
        return ("\n".join(lines),)

    def setup(self) -> str:
        d = self.settings.data
        what = (f"arithmetic, {d.operands} operands in 0..{d.max_operand}" if d.task == "arith" else
                f"4x4 Sudoku, at most {d.max_blanks} blanks, one solution each")
        return (f"{super().setup()} Task: {what}; {d.train_size} training examples, {d.test_size} held-out prompts "
                f"(data seed {d.seed}). The AR models train for {self.ar_train().steps} steps each.")

    def sample(self, run, objective: MaskedDiffusion, n: int, out: Path) -> Path:
        """The first n held-out prompts answered with `sampler.name`: `prompt<TAB>answer<TAB>correct` lines."""
        made = self.data()
        if not 1 <= n <= len(made.test):
            raise UnmaskError(f"n must lie in 1..{len(made.test)} (data.test_size), got {n}")
        s = self.settings
        sampler = s.sampler.samplers(made.task.answer_length)[s.sampler.name]
        test = reasoning.examples(made.task, list(zip(made.test.prompts[:n], made.test.answers[:n], strict=True)))
        res = diffusion_answers(objective.model.eval(), made.task, test, sampler, s.train.seed, s.eval.batch_size)
        path = self.sample_path(out)
        lines = ["prompt\tanswer\tcorrect", *(f"{p}\t{a}\t{'yes' if ok else 'no'}" for p, a, ok in
                                              zip(test.prompts, res.answers, res.correct, strict=True))]
        path.write_text("\n".join(lines) + "\n")
        return path
