"""Fine-tuning on the package task: does each text-pretraining method of docs/papers.md give a better
STARTING POINT than plain MLM when every weight is then trained with a task head? DeBERTa's EMD (P10),
ELECTRA (P36), ERNIE-Gram's n-gram masking (P73) and entity masking (P19) are set against `mlm-code`;
MEAP (P12) against plain `ar-code`, its own causal baseline. Beside each, the frozen-feature linear
probe of docs/code.md, and the same networks fine-tuned from random init (the no-pretraining floor).

Task: a chunk's top-level standard-library package (`eval/code.py` `probe_labels`: 11 packages, the
held-out chunks come from held-out files). Fine-tuning (`eval/finetune.py`): all weights plus a linear
head on mean-pooled final features (for the causal models too: mean over every place), trained by the
one Trainer. Its learning rate was chosen ONCE, for the MLM baseline at seed 0, on a validation split of
20% of the TRAINING files (grid in FT_LRS), then used unchanged for every method and seed.

Budget: width 64, depth 2, 2 heads, windows of 64 tokens, a 2,048-token BPE, batch 32. ELECTRA, AR and
AR+MEAP pretrain for --steps; every MLM run (plain, EMD, n-gram, entity) and ELECTRA with a generator as
wide as the discriminator (`electra-fullgen`; ELECTRA's default is a quarter, 16 wide here) for the steps
of equal training FLOPs to ELECTRA (`code_report.train_flops`), as in docs/code.md. Seeds 0 1 2 seed pretraining and
fine-tuning alike.

    .venv/bin/python benchmarks/code_finetune.py                       # 3 seeds; runs/code_finetune/
    .venv/bin/python benchmarks/code_finetune.py --seeds 0 --steps 30 --ft-steps 20 --out /tmp/cf

Each (method, seed) keeps its result.json under --out/METHOD-sSEED and is read back, so an interrupted
run resumes.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from code_report import train_flops
from machine import describe
from spread import mean_std, signed

from unmask.eval import code as code_eval
from unmask.eval.finetune import package_finetune
from unmask.recipes import Run
from unmask.recipes.ar_code import ArCode
from unmask.recipes.electra_code import ElectraCode
from unmask.recipes.mlm_code import MlmCode
from unmask.train.trainer import TrainConfig

SHARED = ["data.length=64", "data.vocab_size=2048", "model.dim=64", "model.depth=2", "model.heads=2",
          "train.batch_size=32"]
FT_LRS = (3e-4, 1e-3, 3e-3)  # the grid searched once, for MLM at seed 0, on the validation files
# name -> (recipe, overrides, baseline, pretrained?)
METHODS = {
    "random": (MlmCode, [], "mlm", False),
    "mlm": (MlmCode, [], "mlm", True),
    "electra": (ElectraCode, [], "mlm", True),
    "electra-fullgen": (ElectraCode, ["model.generator_share=1.0"], "mlm", True),
    "mlm-emd": (MlmCode, ["model.emd=true"], "mlm", True),
    "mlm-ngram": (MlmCode, ["objective.masker=ngram"], "mlm", True),
    "mlm-entity": (MlmCode, ["objective.masker=entity"], "mlm", True),
    "random-causal": (ArCode, [], "ar", False),
    "ar": (ArCode, [], "ar", True),
    "ar-meap": (ArCode, ["objective.meap=true"], "ar", True),
}
PAPER = {"electra": "P36", "electra-fullgen": "P36", "mlm-emd": "P10", "mlm-ngram": "P73", "mlm-entity": "P19",
         "ar-meap": "P12"}


def backbone_of(objective):
    """The network whose `features` are fine-tuned: ELECTRA's discriminator, else the token model."""
    return objective.discriminator if hasattr(objective, "discriminator") else objective.model


def ft_config(seed: int, steps: int, lr: float) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=32, lr=lr, warmup=max(steps // 10, 1), seed=seed, log_every=steps)


def pretrained(name: str, seed: int, steps: dict, out: Path, tokenizer: Path):
    """(recipe, objective) of `name` at `seed`: trained (or resumed) in out/name-sSEED/pretrain, or at
    its seeded initial weights for the random-init floors."""
    cls, extra, _, trains = METHODS[name]
    recipe = cls().with_overrides(SHARED + extra + [f"train.steps={steps[name]}", f"train.seed={seed}",
                                                    f"data.tokenizer={tokenizer}"])
    objective = recipe.objective()
    if trains:
        run = Run(out / f"{name}-s{seed}" / "pretrain", progress=False)
        data = recipe.training_data(run)
        recipe.prepare(run, objective, data)
        objective = recipe.fit(run, objective, data)
    return recipe, objective.eval()


def pretrain_steps(budget: int, mlm: MlmCode) -> dict[str, int]:
    """Each method's pretraining steps: ELECTRA, AR and AR+MEAP `budget`; every MLM run, and ELECTRA with a
    wider generator, the steps of ELECTRA's training FLOPs at `budget` (`train_flops`)."""
    electra = train_flops(ElectraCode().with_overrides(SHARED))
    flops = {"mlm": train_flops(mlm)}  # every MLM variant costs what plain MLM does
    out = {}
    for name, (cls, extra, _, _) in METHODS.items():
        if cls is MlmCode:
            out[name] = round(budget * electra / flops["mlm"])
        elif cls is ElectraCode and extra:
            flops[name] = train_flops(cls().with_overrides(SHARED + extra))
            out[name] = round(budget * electra / flops[name])
        else:
            out[name] = budget
    print(f"training FLOPs per step: electra {electra:.3g}, "
          + ", ".join(f"{k} {v:.3g}" for k, v in flops.items()), flush=True)
    return out


def choose_lr(corpus, steps: dict, args, tokenizer: Path) -> float:
    """The fine-tuning lr with the best validation accuracy for MLM at seed 0 (cached)."""
    path = args.out / "ft_choice.json"
    if path.exists():
        return json.loads(path.read_text())["lr"]
    recipe, objective = pretrained("mlm", 0, steps, args.out, tokenizer)
    scores = {}
    for lr in FT_LRS:
        net = copy.deepcopy(backbone_of(objective))
        r = package_finetune(net, recipe.settings.model.dim, corpus, ft_config(0, args.ft_steps, lr),
                             args.out / "ft_choice" / f"lr{lr}", validation=0.2)
        scores[lr] = r.accuracy
        print(f"  fine-tuning lr {lr}: validation accuracy {r.accuracy:.3f} ({r.scored_examples} chunks)", flush=True)
    best = max(scores, key=scores.get)
    path.write_text(json.dumps({"lr": best, "validation_accuracy": {str(k): v for k, v in scores.items()}}))
    return best


def measure(name: str, seed: int, corpus, steps: dict, lr: float, args, tokenizer: Path) -> dict:
    path = args.out / f"{name}-s{seed}" / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    t = time.process_time()
    recipe, objective = pretrained(name, seed, steps, args.out, tokenizer)
    net = backbone_of(objective)
    probe = code_eval.package_probe(net.features, corpus, seed=seed)
    ft = package_finetune(net, recipe.settings.model.dim, corpus, ft_config(seed, args.ft_steps, lr),
                          args.out / f"{name}-s{seed}" / "finetune")
    result = {"finetune_accuracy": ft.accuracy, "finetune_balanced": ft.balanced_accuracy,
              "probe_accuracy": probe["probe_accuracy"], "majority": ft.majority,
              "classes": ft.classes, "train_chunks": ft.train_examples, "test_chunks": ft.scored_examples,
              "pretrain_steps": steps[name] * METHODS[name][3],
              "cpu_seconds": time.process_time() - t}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"{name} s{seed}: fine-tuned {ft.accuracy:.3f} (balanced {ft.balanced_accuracy:.3f}), "
          f"probe {probe['probe_accuracy']:.3f}, {result['cpu_seconds']:.0f} CPU s", flush=True)
    return result


def table(results: dict, seeds: list[int], names: list[str]) -> list[str]:
    L = ["| method | pretrain steps | fine-tuned accuracy | delta vs baseline per seed | fine-tuned balanced "
         "accuracy | balanced delta per seed | frozen probe | probe delta per seed |", "|---" * 8 + "|"]
    for name in names:
        base = METHODS[name][2]
        ft = [results[name][s]["finetune_accuracy"] for s in seeds]
        pr = [results[name][s]["probe_accuracy"] for s in seeds]
        ba = [results[name][s]["finetune_balanced"] for s in seeds]
        if name == base:
            d_ft = d_pr = d_ba = "(baseline)"
        else:
            d_ft = signed([f - results[base][s]["finetune_accuracy"] for f, s in zip(ft, seeds, strict=True)])
            d_pr = signed([p - results[base][s]["probe_accuracy"] for p, s in zip(pr, seeds, strict=True)])
            d_ba = signed([b - results[base][s]["finetune_balanced"] for b, s in zip(ba, seeds, strict=True)])
        label = f"{name} ({PAPER[name]})" if name in PAPER else name
        L.append(f"| {label} | {results[name][seeds[0]]['pretrain_steps']} | {mean_std(ft)} | {d_ft} | "
                 f"{mean_std(ba)} | {d_ba} | {mean_std(pr)} | {d_pr} |")
    return L


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/code_finetune"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300, help="pretraining steps of electra, ar, ar-meap")
    p.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps")
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(describe(), flush=True)
    start = time.process_time()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = args.out / "tokenizer.json"
    base = MlmCode().with_overrides(SHARED)
    corpus = base.corpus(Run(args.out))  # trains the shared tokenizer once
    steps = pretrain_steps(args.steps, base)
    print("pretraining steps: " + ", ".join(f"{n} {k}" for n, k in steps.items()), flush=True)
    lr = choose_lr(corpus, steps, args, tokenizer)
    print(f"fine-tuning: {args.ft_steps} steps, batch 32, lr {lr} (chosen on validation files, MLM seed 0)", flush=True)
    names = [n for n in args.methods.split(",") if n]
    results: dict = {n: {} for n in names}
    for seed in args.seeds:  # seed-major: an interrupted run still has whole seeds
        for name in names:
            results[name][seed] = measure(name, seed, corpus, steps, lr, args, tokenizer)
    first = results[names[0]][args.seeds[0]]
    print(f"\nPackage task: {first['classes']} packages, {first['train_chunks']} training and "
          f"{first['test_chunks']} held-out chunks, majority share {first['majority']:.3f}; seeds {args.seeds}; "
          f"mean +- sample std.\n")
    bidirectional = [n for n in names if METHODS[n][2] == "mlm"]
    causal = [n for n in names if METHODS[n][2] == "ar"]
    for group in (bidirectional, causal):
        if group and METHODS[group[0]][2] in names:
            print("\n".join(table(results, args.seeds, group)) + "\n")
    spent = sum(r[s]["cpu_seconds"] for r in results.values() for s in args.seeds)
    print(f"CPU seconds: {time.process_time() - start:.0f} in this process; {spent:.0f} summed over the "
          "kept runs (pretraining, probe, fine-tuning)")


if __name__ == "__main__":
    main()
