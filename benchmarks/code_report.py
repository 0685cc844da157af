"""The acceptance figures for text and code, written to docs/code.md.

    python benchmarks/code_report.py --out runs/code-report --steps 1000 --maskers ngram,entity --threads 1
    python benchmarks/code_report.py --out runs/code-report --steps 40 --doc /tmp/code.md   # a quick look

Runs, all on the same tokenizer (trained once into OUT/tokenizer.json, copied into each run folder by
the `data.tokenizer` setting), the same held-out files and the same seed; a finished run is read back
from its `metrics.json`, not trained again (its settings are kept in `report_config.json`):
- `ar` (ar-code) and `mdlm` (mdlm-code): the same Transformer and parameters and the same steps; AR's
  exact NLL against the masked-diffusion bound, in bits per token, and the variance of the bound's
  estimate with and without coupled masks (P54); function-body infilling with every sampler;
- `electra` (electra-code) and `mlm` (mlm-code) at equal training FLOPs (counted with
  `torch.utils.flop_counter` on one step of each), compared by a linear probe of frozen features;
  beside them an untrained network's features;
- `mlm-emd` (P10, `model.emd=true`) at the steps of `mlm`; `ar-meap` (P12, `objective.meap=true`) and
  `ar-cm3` (P17, `objective.cm3=true`) at the steps of `ar`;
- with `--maskers ngram,entity` (or whole-word, span), `mlm` again with those maskers
  (`objective.masker=...`; P73, P19).
The transformers timing of benchmarks/mlm_vs_transformers.py is included when `--bench` is given
(or read back from OUT/mlm_vs_transformers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unmask.config import to_dict
from unmask.data import code
from unmask.eval import code as code_eval
from unmask.recipes import Run, load_run
from unmask.recipes.ar_code import ArCode
from unmask.recipes.electra_code import ElectraCode
from unmask.recipes.mdlm_code import MdlmCode
from unmask.recipes.mlm_code import MASKERS, MlmCode


def train_flops(recipe) -> float:
    """FLOPs of one training step (forward and backward) of the recipe's objective."""
    obj = recipe.objective()
    d, b = recipe.settings.data, recipe.settings.train.batch_size
    x = torch.randint(len(code.SPECIAL), d.vocab_size, (b, d.length), generator=torch.Generator().manual_seed(0))
    ids = torch.arange(d.length).expand(b, -1)
    with FlopCounterMode(display=False) as counter:
        obj({"tokens": x, "word_ids": ids, "entity_ids": ids}, torch.Generator().manual_seed(0)).loss.backward()
    return counter.get_total_flops()


def read_back(name: str, recipe, out: Path) -> dict | None:
    """The metrics of a finished run trained with exactly these settings, else None."""
    done, stamp = out / name / "metrics.json", out / name / "report_config.json"
    if done.exists() and stamp.exists() and json.loads(stamp.read_text()) == to_dict(recipe.settings):
        return json.loads(done.read_text())
    return None


def run(name: str, recipe, out: Path) -> dict:
    metrics = read_back(name, recipe, out)
    if metrics is not None:
        print(f"{name}: read back from {out / name / 'metrics.json'}")
        return metrics
    print(f"{name}: training {recipe.name} for {recipe.settings.train.steps} steps", flush=True)
    t = time.time()
    metrics = recipe.train(Run(out / name, progress=False))
    metrics["train_eval_seconds"] = time.time() - t
    (out / name / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / name / "report_config.json").write_text(json.dumps(to_dict(recipe.settings)))
    return metrics


def untrained_probe(recipe, corpus) -> dict:
    """The probe of the features of mlm-code's network at its seeded initial weights."""
    model = recipe.objective().model.eval()
    return code_eval.package_probe(model.features, corpus, seed=recipe.settings.train.seed)


def infill_temperatures(out: Path, temperatures=(0.5, 0.2)) -> dict:
    """Function-body infilling of the trained mdlm-code run at lower sampling temperatures (its own
    evaluation samples at 1.0); cached in OUT/mdlm/infill_temperatures.json."""
    path = out / "mdlm" / "infill_temperatures.json"
    if path.exists():
        return json.loads(path.read_text())
    recipe, objective, run_ = load_run(out / "mdlm")
    s, corpus = recipe.settings, recipe.corpus(run_)
    cases = code_eval.infill_cases(corpus, s.data.length, s.eval.infill_cases)
    result = {}
    for t in temperatures:
        for name, sampler in replace(s.sampler, temperature=t).samplers().items():
            if name != "maskgit-greedy":
                r = code_eval.infill(objective.model.eval(), cases, sampler, corpus, s.data.length, s.data.vocab_size,
                                     s.train.seed)
                result[f"{name} @ {t}"] = {"parse": r.share, "token_accuracy": r.token_accuracy}
    path.write_text(json.dumps(result, indent=2))
    return result


def pick_examples(examples: list[dict], k: int = 4) -> list[int]:
    """Up to k cases: first those whose whole file parsed with some sampler, then the first ones."""
    samplers = ("maskgit", "ancestral", "first-hitting")
    good = [i for i, ex in enumerate(examples) if any(ex[f"{s}_parses"] for s in samplers)]
    rest = [i for i in range(len(examples)) if i not in good]
    return (good[: k - 1] + rest)[:k]


def fmt(v, digits=3):
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# the sections after this line are written by other benchmarks; rewriting the report keeps them
KEPT = "\n<!-- written by other benchmarks, kept when this report is made again -->\n"


def write_doc(path: Path, r: dict, steps: dict, flops: dict, bench: dict | None, out: Path, args) -> None:
    ar, md, el, ml, cfg = r["ar"], r["mdlm"], r["electra"], r["mlm"], r["_settings"]
    command = f"python benchmarks/code_report.py --out {out} --steps {args.steps}"
    command += (f" --maskers {args.maskers}" if args.maskers else "")
    command += f" --mlm-steps {args.mlm_steps}" if args.mlm_steps else ""
    command += f" --threads {args.threads}" if args.threads else ""
    L = []
    L += ["# Text and code: masked language models on the Python standard library", "",
          f"Made by `{command}` on {platform.machine()} with "
          f"{torch.get_num_threads()} torch thread(s) on a 2-core machine shared with other work (load "
          f"average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}. "
          "Corpus: the standard library's own `.py` files (`unmask.data.code`), split by path hash; "
          f"{r['_corpus']['train_chunks']} training and {r['_corpus']['test_chunks']} held-out chunks of "
          f"{cfg.data.length} tokens, byte-level BPE of {cfg.data.vocab_size} tokens. Every model: width "
          f"{cfg.model.dim}, depth {cfg.model.depth}, batch {cfg.train.batch_size}, seed {cfg.train.seed}. "
          "Held-out scores use the first 512 held-out chunks unless said otherwise. Small models, minutes of "
          "training: the directions are the result, not the absolute numbers.", ""]
    L += ["## Likelihood: masked diffusion bound against the autoregressive NLL", "",
          "Same Transformer (same parameters), same steps, same held-out chunks; AR is exact, the diffusion "
          "figure is an upper bound (Monte Carlo, 4 masks per chunk).", "",
          "| model | steps | held-out bits per token |", "|---|---|---|",
          f"| ar-code (NLL) | {steps['ar']} | {fmt(ar['heldout_nll_bits'])} |",
          f"| mdlm-code (ELBO bound) | {steps['mdlm']} | {fmt(md['heldout_bound_bits'])} |"]
    if "ar-meap" in r:
        L += [f"| ar-code, MEAP inputs (P12) | {steps['ar']} | {fmt(r['ar-meap']['heldout_nll_bits'])} |"]
    if "ar-cm3" in r:
        L += [f"| ar-code, CM3 training (P17), scored on plain chunks | {steps['ar']} | "
              f"{fmt(r['ar-cm3']['heldout_nll_bits'])} |"]
    L += ["", "### Variance of the bound's estimate (P54)", "",
          "Per held-out chunk (128 chunks), the variance over repeated draws of the estimate of the bound "
          "(bits per token), averaged over chunks; same trained mdlm-code network.", "",
          "| estimator | network calls | variance | mean |", "|---|---|---|---|",
          f"| one mask, t ~ U(eps, 1) | 1 | {fmt(md['bound_var_single'], 4)} | {fmt(md['bound_mean_single'])} |",
          f"| two independent masks, averaged | 2 | {fmt(md['bound_var_two_independent'], 4)} | |",
          f"| coupled complementary pair (DiffuCoder) | 2 | {fmt(md['bound_var_coupled'], 4)} | "
          f"{fmt(md['bound_mean_coupled'])} |", "",
          f"Variance ratio one mask / coupled: **{fmt(md['bound_ratio_single_over_coupled'], 2)}**; two "
          f"independent / coupled (equal calls): **{fmt(md['bound_ratio_two_independent_over_coupled'], 2)}**.", ""]
    L += ["## Infilling a function body", "",
          f"{md['infill_cases']} functions of held-out files whose body takes 6..40 tokens: the body is hidden "
          "in a window of 128 tokens (signature and the rest of the window given), generated, spliced back "
          "into the whole file, which must pass `ast.parse`. mdlm-code knows the body's length (the hidden "
          "count); the CM3 model chooses it (it stops at `<eos>`, at most 8 tokens over) and sees a window "
          "11 tokens shorter.", "",
          "Temperature 1 unless the row says otherwise (greedy: none); greedy outputs are often one token repeated "
          "(`________` is a valid statement), so read the parse share beside the token accuracy (share of "
          "hidden tokens equal to the original).", "",
          "| filler | whole file parses | token accuracy | denoiser calls per batch |", "|---|---|---|---|",
          f"| unigram tokens (baseline) | {fmt(md['infill_parse_unigram'])} | | |"]
    for s in ("maskgit", "ancestral", "first-hitting", "maskgit-greedy"):
        L += [f"| mdlm-code + {s} | {fmt(md['infill_parse_' + s])} | {fmt(md['infill_token_acc_' + s])} "
              f"| {fmt(md['infill_nfe_' + s], 1)} |"]
    if "ar-cm3" in r:
        L += [f"| ar-code + CM3, left to right | {fmt(r['ar-cm3']['infill_parse_cm3'])} | | |"]
    for name, v in r.get("_infill_temperatures", {}).items():
        L += [f"| mdlm-code + {name.replace(' @ ', ', temperature ')} | {fmt(v['parse'])} | "
              f"{fmt(v['token_accuracy'])} | |"]
    examples = json.loads((out / "mdlm" / "infill.json").read_text())
    cm3 = json.loads((out / "ar-cm3" / "infill.json").read_text()) if "ar-cm3" in r else None
    for i in pick_examples(examples):
        ex = examples[i]
        L += ["", f"`{ex['path']}`, `def {ex['name']}`, original:", "", "```python",
              ex["signature"] + ex["original"], "```"]
        for s in ("maskgit", "ancestral", "first-hitting"):
            verdict = "file parses" if ex[f"{s}_parses"] else "file does not parse"
            L += ["", f"mdlm-code + {s} ({verdict}):", "", "```python", ex["signature"] + ex[s], "```"]
        if cm3:
            verdict = "file parses" if cm3[i]["cm3_parses"] else "file does not parse"
            L += ["", f"ar-code + CM3 ({verdict}):", "", "```python", ex["signature"] + cm3[i]["cm3"], "```"]
    L += ["", "## ELECTRA against MLM at equal compute (P36)", "",
          f"Training FLOPs per step (forward + backward, batch {cfg.train.batch_size}): ELECTRA "
          f"{flops['electra'] / 1e9:.1f} G, MLM {flops['mlm'] / 1e9:.1f} G, so MLM trains {steps['mlm']} steps "
          f"to ELECTRA's {steps['electra']}"
          + (f" (set by --mlm-steps; the FLOP count gives {steps['mlm_flops']}: these runs were made when the MLM step "
             "still ran its last block at every position)" if steps["mlm"] != steps["mlm_flops"] else "")
          + ". Linear probe (logistic regression on standardised, mean-pooled "
          f"frozen features) predicting a chunk's top-level package: {ml['probe_classes']} packages with "
          f"enough chunks in both splits, trained on up to 3000 training chunks, scored on "
          f"{ml['probe_test_chunks']} held-out chunks of unseen files.", "",
          "| features | training steps | probe accuracy |", "|---|---|---|",
          f"| majority class | | {fmt(ml['probe_majority'])} |",
          f"| untrained network | 0 | {fmt(r['untrained']['probe_accuracy'])} |",
          f"| mlm-code | {steps['mlm']} | {fmt(ml['probe_accuracy'])} |",
          f"| electra-code (discriminator) | {steps['electra']} | {fmt(el['probe_accuracy'])} |", "",
          f"Held-out: MLM hidden-token accuracy {fmt(ml['heldout_accuracy'])}; ELECTRA's discriminator "
          f"accuracy {fmt(el['heldout_disc_acc'])} with {fmt(el['heldout_replaced_share'])} of tokens replaced, "
          f"generator accuracy {fmt(el['heldout_gen_acc'])}.", ""]
    L += ["## Masked language model: held-out accuracy", "",
          "15% of each held-out chunk hidden uniformly (exact count), all shown as the mask token; top-1 "
          "accuracy at the hidden tokens.", "", "| model | steps | held-out accuracy | probe |", "|---|---|---|---|",
          f"| mlm-code (random, 80/10/10) | {steps['mlm']} | {fmt(ml['heldout_accuracy'])} | "
          f"{fmt(ml['probe_accuracy'])} |"]
    if "mlm-emd" in r:
        L += [f"| mlm-code + DeBERTa EMD (P10) | {steps['mlm']} | {fmt(r['mlm-emd']['heldout_accuracy'])} | "
              f"{fmt(r['mlm-emd']['probe_accuracy'])} |"]
    for m in ("whole-word", "span", "ngram", "entity"):
        if f"mlm-{m}" in r:
            x = r[f"mlm-{m}"]
            L += [f"| mlm-code, {m} masking | {steps['mlm']} | {fmt(x['heldout_accuracy'])} "
                  f"(own masker {fmt(x.get('heldout_accuracy_own_masker', float('nan')))}) | "
                  f"{fmt(x['probe_accuracy'])} |"]
    if "ar-meap" in r:
        a, m = r["ar"], r["ar-meap"]
        L += ["", "## MEAP: in-context recall (P12)", "",
              "Next-token accuracy where the target is an identifier piece already seen inside an identifier "
              "earlier in the window (in-context recall), and at every other position.", "",
              "| model | recall accuracy | other accuracy | held-out bits |", "|---|---|---|---|",
              f"| ar-code | {fmt(a['repeat_accuracy'])} | {fmt(a['other_accuracy'])} | {fmt(a['heldout_nll_bits'])} |",
              f"| ar-code + MEAP | {fmt(m['repeat_accuracy'])} | {fmt(m['other_accuracy'])} | "
              f"{fmt(m['heldout_nll_bits'])} |"]
    if bench:
        L += ["", "## Training step against transformers (benchmarks/mlm_vs_transformers.py)", "",
              "BertForMaskedLM + DataCollatorForLanguageModeling against MaskedTokenModeling on BertMaskedModel "
              "(same BERT layout, weights and losses agree: tests/test_mlm_vs_transformers.py), vocabulary "
              "30522, length 128, width 256, depth 4, 4 heads, MLP 1024, batch 32, 15% hidden, steps "
              f"interleaved in one process, {bench.get('threads', '?')} torch thread(s), load average "
              f"{bench.get('load', float('nan')):.1f} on the 2 cores; median of {bench.get('steps', '?')} steps.", "",
              "| side | s/step | transformers / side |", "|---|---|---|"]
        base = bench["transformers BertForMaskedLM"]
        for k, v in bench.items():
            if k not in ("threads", "load", "steps"):
                L += [f"| {k} | {v:.3f} | {base / v:.2f}x |"]
    L += ["", "## Parts", "",
          "| part | paper | module | test |", "|---|---|---|---|",
          "| code corpus, byte-level BPE, Python lexical ids | | `unmask.data.code` | tests/test_code_data.py |",
          "| 80/10/10 input corruption (exact counts) | BERT | `masking/corruption.py` | tests/test_text_maskers.py |",
          "| whole-word (whole identifier) masking | BERT WWM | `masking/words.py` | tests/test_text_maskers.py |",
          "| geometric spans | SpanBERT | `masking/span.py` (existing) | tests/test_maskers.py |",
          "| n-gram masking | ERNIE-Gram (P73) | `masking/ngram.py` | tests/test_text_maskers.py |",
          "| one token per identifier | LEM (P19) | `masking/entity.py` | tests/test_text_maskers.py |",
          "| causally masked rewrite | CM3 (P17) | `masking/cm3.py` "
          "| tests/test_text_maskers.py, tests/test_code_eval.py |",
          "| input masking in next-token prediction | MEAP (P12) | `masking/meap.py`, `objectives/autoregressive.py` "
          "| tests/test_text_maskers.py, tests/test_text_objectives.py |",
          "| MLM with a fixed share, logits at hidden places | BERT, Long-VITA (P55) | `objectives/masked_token.py` "
          "| tests/test_text_objectives.py |",
          "| replaced-token detection | ELECTRA (P36) | `objectives/electra.py` | tests/test_electra.py |",
          "| diffusion ELBO with prompt (SFT) and coupled masks | LLaDA, DiffuCoder (P54) "
          "| `objectives/masked_diffusion.py` | tests/test_text_objectives.py |",
          "| autoregressive baseline, same network | | `nn/causal.py`, `objectives/autoregressive.py` "
          "| tests/test_text_objectives.py |",
          "| enhanced mask decoder | DeBERTa (P10) | `nn/emd.py` | tests/test_text_nn.py |",
          "| BERT layout, last block only at hidden places | BERT, P55 | `nn/bert.py` "
          "| tests/test_text_nn.py, tests/test_mlm_vs_transformers.py |",
          "| any transformers masked LM as a denoiser | | `nn/hf.py` | tests/test_text_hf.py |",
          "| infilling, probe, bound variance, recall | | `eval/code.py` | tests/test_code_eval.py |"]
    L += ["", "## Runs", "", f"Each run also takes `{r['_shared']}`; its report is `{out}/RUN/report.md`.", "",
          "| run | command | train + eval seconds |", "|---|---|---|"]
    for name, command in r["_commands"].items():
        L += [f"| {name} | `{command}` | {fmt(r[name].get('train_eval_seconds', float('nan')), 0)} |"]
    kept = path.read_text().partition(KEPT)[2] if path.exists() else ""
    path.write_text("\n".join(L) + "\n" + (KEPT + kept if kept else ""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/code-report"))
    p.add_argument("--doc", type=Path, default=Path("docs/code.md"))
    p.add_argument("--steps", type=int, default=400, help="steps of ar, mdlm and electra")
    p.add_argument("--maskers", default="", help="comma-separated maskers to train mlm with too "
                   "(whole-word, span, ngram, entity)")
    p.add_argument("--skip-extras", action="store_true", help="no mlm-emd, ar-meap, ar-cm3")
    p.add_argument("--bench", action="store_true", help="run benchmarks/mlm_vs_transformers.py too")
    p.add_argument("--mlm-steps", type=int, default=0, help="steps of the MLM runs (0: ELECTRA's training FLOPs)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", default="", help="comma-separated runs to train now (others are read back if "
                   "done); the doc is written once every run is done")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    every = max(args.steps // 10, 1)  # checkpoints, so that a killed report resumes where it stopped
    tokenizer = out / "tokenizer.json"
    base = MlmCode()
    corpus = base.corpus(Run(out))  # trains OUT/tokenizer.json once; each run copies it and finds this corpus
    r: dict = {"_settings": base.settings,
               "_corpus": {"train_chunks": len(corpus.train), "test_chunks": len(corpus.test)}}
    shared = [f"train.checkpoint_every={every}", f"data.tokenizer={tokenizer}"]

    flops = {"electra": train_flops(ElectraCode()), "mlm": train_flops(MlmCode())}
    mlm_flops_steps = round(args.steps * flops["electra"] / flops["mlm"])
    mlm_steps = args.mlm_steps or mlm_flops_steps
    steps = {"ar": args.steps, "mdlm": args.steps, "electra": args.steps, "mlm": mlm_steps,
             "mlm_flops": mlm_flops_steps}
    plan = [("ar", ArCode, [f"train.steps={args.steps}"]), ("mdlm", MdlmCode, [f"train.steps={args.steps}"]),
            ("electra", ElectraCode, [f"train.steps={args.steps}"]), ("mlm", MlmCode, [f"train.steps={mlm_steps}"])]
    if not args.skip_extras:
        plan += [("mlm-emd", MlmCode, [f"train.steps={mlm_steps}", "model.emd=true"]),
                 ("ar-meap", ArCode, [f"train.steps={args.steps}", "objective.meap=true"]),
                 ("ar-cm3", ArCode, [f"train.steps={args.steps}", "objective.cm3=true"])]
    for m in filter(None, args.maskers.split(",")):
        if m not in MASKERS or m == "random":
            raise SystemExit(f"--maskers takes {', '.join(k for k in MASKERS if k != 'random')}; got {m!r}")
        plan.append((f"mlm-{m}", MlmCode, [f"train.steps={mlm_steps}", f"objective.masker={m}"]))
    only = set(filter(None, args.only.split(",")))
    unknown = only - {name for name, _, _ in plan}
    if unknown:
        raise SystemExit(f"--only names runs not in the plan: {sorted(unknown)}")
    r["_shared"] = " ".join(shared)
    r["_commands"] = {name: f"unmask train {cls.name} {' '.join(overrides)} --out {out / name}"
                      for name, cls, overrides in plan}
    for name, cls, overrides in plan:
        recipe = cls().with_overrides(overrides + shared)
        if only and name not in only and read_back(name, recipe, out) is None:
            print(f"{name}: not done yet; the doc is written once it is")
            continue
        r[name] = run(name, recipe, out)
    if any(name not in r for name, _, _ in plan):
        return
    r["untrained"] = untrained_probe(base, corpus)
    r["_infill_temperatures"] = infill_temperatures(out)
    bench = None
    bench_file = out / "mlm_vs_transformers.json"
    if args.bench:
        import mlm_vs_transformers

        mlm_vs_transformers.main(["--steps", "5", "--json", str(bench_file)])
        bench = json.loads(bench_file.read_text())
    elif bench_file.exists():
        bench = json.loads(bench_file.read_text())
    write_doc(args.doc, r, steps, flops, bench, out, args)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
