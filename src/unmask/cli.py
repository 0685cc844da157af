"""The command line: `unmask train | sample | eval | recipes | masks`.

    unmask train digits --out runs/digits train.steps=800 train.lr=1e-3 model.dim=64
    unmask eval runs/digits sampler.name=first-hitting
    unmask sample runs/digits --n 100 --out samples.png
    unmask recipes                  # every recipe
    unmask recipes digits           # its settings tree: defaults, allowed values, help
    unmask masks --out masks.png

    torchrun --standalone --nproc_per_node=2 -m unmask train digits --out runs/d2 train.parallel=fsdp

Settings are dotted keys into the recipe's sections (`train`, `model`, `data`, `objective`,
`sampler`, `eval`); `eval` and `sample` change only `sampler.*` and `eval.*`. A bad input ends with
one line on stderr naming what is wrong and what is allowed, exit code 2; `--debug` shows the
traceback instead. Warnings are one line each; under torchrun only rank 0 shows them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .config import describe
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
    t.add_argument("overrides", nargs="*", help="dotted key=value settings (`unmask recipes NAME` lists them)")
    t.add_argument("--out", type=Path, help="run folder (default runs/RECIPE)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--fresh", action="store_true", help="ignore checkpoints already in the folder")
    e = sub.add_parser("eval", help="evaluate a trained run again")
    e.add_argument("run_dir", type=Path)
    e.add_argument("overrides", nargs="*", help="sampler.* and eval.* settings")
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("overrides", nargs="*", help="sampler.* and eval.* settings")
    s.add_argument("--n", type=int, default=100, help="samples to draw")
    s.add_argument("--out", type=Path,
                   help="file to write; its suffix is the recipe's (PNG images, text, MIDI, TSV molecules); "
                        "default RUN_DIR/samples.SUFFIX")
    r = sub.add_parser("recipes", help="list recipes, or one recipe's settings")
    r.add_argument("name", nargs="?", help="a recipe: print its settings tree")
    m = sub.add_parser("masks", help="draw every masker on grid, video and streams layouts")
    m.add_argument("--out", type=Path, default=Path("masks.png"), help="PNG to write")
    m.add_argument("--ratio", type=float, default=0.5, help="share hidden, in [0, 1]")
    m.add_argument("--seed", type=int, default=0, help="seed of the drawn masks")
    return p


def _check_builds(recipe) -> None:
    """Build the recipe's objective on the meta device (no memory, no time) so that settings that do
    not fit together (a width not divisible by the heads) are refused before any data is loaded."""
    import torch

    try:
        with torch.device("meta"):
            recipe.build()
    except ValueError as e:
        raise UnmaskError(f"the settings do not build a model: {e}") from None
    except Exception:  # a build that cannot run on the meta device is checked by the real build
        pass


def _print_recipes(name: str | None) -> None:
    from . import recipes

    if name is None:
        for key, cls in sorted(recipes.RECIPES.items()):
            print(f"{key}: {cls.summary} (papers: {', '.join(cls.papers)})")
        print("`unmask recipes NAME` prints a recipe's settings")
        return
    cls = recipes.get(name)
    print(f"{cls.name}: {cls.summary} (papers: {', '.join(cls.papers)}; samples: *{cls.sample_suffix})")
    last = None
    for key, value, allowed, help_ in describe(cls.Settings()):
        head = key.split(".", 1)[0]
        if head != last:
            print(f"  [{head}]")
            last = head
        print(f"    {key}={value}  [{allowed}]  {help_}")


def run(argv: list[str]) -> int:
    from . import recipes

    args, extra = _parser().parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        raise UnmaskError(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = args.overrides + extra
    if args.command == "recipes":
        _print_recipes(args.name)
        return 0
    if args.command == "masks":
        from .masking.gallery import draw_gallery

        if not 0.0 <= args.ratio <= 1.0:
            raise UnmaskError(f"--ratio must lie in [0, 1], got {args.ratio}")
        draw_gallery(args.out, ratio=args.ratio, seed=args.seed)
        print(f"wrote {args.out}")
        return 0
    if args.command == "train":
        recipe = recipes.get(args.recipe)().with_overrides(args.overrides)
        run = recipes.Run(args.out or Path("runs") / recipe.name, progress=not args.no_progress)
        _check_builds(recipe)
        if args.fresh and run.folder.exists() and os.environ.get("RANK", "0") == "0":
            import shutil

            shutil.rmtree(run.folder / "checkpoints", ignore_errors=True)
            (run.folder / "metrics.csv").unlink(missing_ok=True)
        _print_metrics(run.folder, recipe.train(run))
        return 0
    if args.command == "sample" and args.n < 1:
        raise UnmaskError(f"--n must be >= 1, got {args.n}")
    recipe, objective, run = recipes.load_run(args.run_dir, args.overrides)
    if args.command == "eval":
        _print_metrics(run.folder, recipe.evaluate(run, objective))
        return 0
    out = args.out or run.folder / f"samples{recipe.sample_suffix}"
    print(f"wrote {recipe.sample(run, objective, args.n, out)}")
    return 0


def _print_metrics(run_dir: Path, metrics: dict) -> None:
    from .train import print0

    for k, v in metrics.items():
        print0(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print0(f"wrote {run_dir}/metrics.json and report.md")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"unmask: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    rank = os.environ.get("RANK", "0")
    where = "" if rank == "0" else f" (rank {rank})"  # under torchrun every process may fail alone
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_warning
        if rank != "0":
            warnings.simplefilter("ignore")
        try:
            return run(argv)
        except UnmaskError as e:
            if debug:
                raise
            message = str(e)
        except OSError as e:  # a folder that cannot be written, a disk that is full
            if debug:
                raise
            message = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
        except KeyboardInterrupt:
            print(f"unmask{where}: interrupted; the last checkpoint is kept", file=sys.stderr)
            return 130
    print(f"unmask: error{where}: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
