"""The command line: `unmask train | sample | eval | recipes`.

    unmask train digits --out runs/digits steps=800 lr=1e-3
    unmask eval runs/digits sampler=first-hitting
    unmask sample runs/digits --n 100 --out samples.png
    unmask recipes

A bad input ends with one line on stderr naming what is wrong and what is allowed, exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import apply_overrides, describe
from .errors import UnmaskError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UnmaskError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unmask", description="Masked token modeling: train, sample, evaluate.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a recipe, then evaluate it")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="key=value settings of the recipe")
    t.add_argument("--out", type=Path, help="run folder (default runs/RECIPE)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--fresh", action="store_true", help="ignore checkpoints already in the folder")
    e = sub.add_parser("eval", help="evaluate a trained run again")
    e.add_argument("run_dir", type=Path)
    e.add_argument("overrides", nargs="*", help="key=value evaluation settings (sampler, steps...)")
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("overrides", nargs="*", help="key=value sampler settings")
    s.add_argument("--n", type=int, default=100, help="samples to draw")
    s.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/samples.png)")
    sub.add_parser("recipes", help="list recipes and their settings")
    return p


def _eval_overrides(recipe, cfg, overrides):
    new = apply_overrides(cfg, overrides)
    if new.model_config() != cfg.model_config():
        raise UnmaskError("eval and sample can change only evaluation settings, not the model's")
    return new


def run(argv: list[str]) -> int:
    from . import recipes

    args, extra = _parser().parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        raise UnmaskError(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = args.overrides + extra
    if args.command == "recipes":
        for name, module in sorted(recipes.RECIPES.items()):
            print(f"{name}: {module.SUMMARY} (papers: {', '.join(module.PAPERS)})")
            for key, value, allowed, help_ in describe(module.Config()):
                print(f"  {key}={value}  [{allowed}]  {help_}")
        return 0
    if args.command == "train":
        recipe = recipes.get(args.recipe)
        cfg = apply_overrides(recipe.Config(), args.overrides)
        run_dir = args.out or Path("runs") / recipe.NAME
        if args.fresh and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "metrics.csv").unlink(missing_ok=True)
        metrics = recipe.train(cfg, run_dir, progress=not args.no_progress)
        _print_metrics(run_dir, metrics)
        return 0
    recipe, cfg, objective = recipes.load_run(args.run_dir)
    cfg = _eval_overrides(recipe, cfg, args.overrides)
    if args.command == "eval":
        _print_metrics(args.run_dir, recipe.evaluate(cfg, objective, args.run_dir))
        return 0
    if args.n < 1:
        raise UnmaskError(f"--n must be >= 1, got {args.n}")
    out = args.out or args.run_dir / "samples.png"
    recipe.sample(cfg, objective, args.n, out)
    print(f"wrote {out}")
    return 0


def _print_metrics(run_dir: Path, metrics: dict) -> None:
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"wrote {run_dir}/metrics.json and report.md")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return run(argv)
    except UnmaskError as e:
        if debug:
            raise
        print(f"unmask: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unmask: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
