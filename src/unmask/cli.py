"""The command line: `unmask train | sample | eval | recipes | masks`.

    unmask train digits --out runs/digits steps=800 lr=1e-3
    unmask eval runs/digits sampler=first-hitting
    unmask sample runs/digits --n 100 --out samples.png
    unmask recipes
    unmask masks --out masks.png

    torchrun --standalone --nproc_per_node=2 -m unmask train digits --out runs/d2 parallel=fsdp

`train` takes the recipe's settings and, for settings the recipe does not have, the trainer's
(`parallel`, `micro_batch`, `keep`, `grad_clip`...; `unmask recipes` lists both). A bad input ends
with one line on stderr naming what is wrong and what is allowed, exit code 2; `--debug` shows the
traceback instead. Warnings are one line each; under torchrun only rank 0 shows them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from .config import apply_overrides, describe, describe_field
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
    m = sub.add_parser("masks", help="draw every masker on grid, video and streams layouts")
    m.add_argument("--out", type=Path, default=Path("masks.png"), help="PNG to write")
    m.add_argument("--ratio", type=float, default=0.5, help="share hidden, in [0, 1]")
    m.add_argument("--seed", type=int, default=0, help="seed of the drawn masks")
    return p


def _eval_overrides(recipe, cfg, overrides):
    new = apply_overrides(cfg, overrides)
    if new.model_config() != cfg.model_config():
        raise UnmaskError("eval and sample can change only evaluation settings, not the model's")
    return new


def _trainer_only_fields(recipe) -> list[dataclasses.Field]:
    from .train import TrainConfig

    own = {f.name for f in dataclasses.fields(recipe.Config)}
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in own]


def _train_config(recipe, overrides: list[str]):
    """(recipe config, trainer-only changes) from key=value strings; every key and value checked."""
    from .train import TrainConfig

    trainer_keys = {f.name for f in _trainer_only_fields(recipe)}
    ours, theirs = [], []
    for item in overrides:
        key = item.partition("=")[0].strip().replace("-", "_")
        (theirs if key in trainer_keys else ours).append(item)
    cfg = apply_overrides(recipe.Config(), ours, other_keys=sorted(trainer_keys))
    given = {item.partition("=")[0].strip().replace("-", "_") for item in theirs}
    trained = apply_overrides(TrainConfig(), theirs)
    return cfg, {k: getattr(trained, k) for k in given}


def _check_builds(recipe, cfg) -> None:
    """Build the recipe's objective on the meta device (no memory, no time) so that settings that do
    not fit together (a width not divisible by the heads) are refused before any data is loaded."""
    import torch

    try:
        with torch.device("meta"):
            recipe.build(cfg)
    except ValueError as e:
        raise UnmaskError(f"the settings do not build a model: {e}") from None
    except Exception:  # a build that cannot run on the meta device is checked by the real build
        pass


def run(argv: list[str]) -> int:
    from . import recipes

    args, extra = _parser().parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        raise UnmaskError(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = args.overrides + extra
    if args.command == "recipes":
        from .train import TrainConfig

        defaults = TrainConfig()
        for name, module in sorted(recipes.RECIPES.items()):
            print(f"{name}: {module.SUMMARY} (papers: {', '.join(module.PAPERS)})")
            for key, value, allowed, help_ in describe(module.Config()):
                print(f"  {key}={value}  [{allowed}]  {help_}")
            for f in _trainer_only_fields(module):
                print(f"  {f.name}={getattr(defaults, f.name)}  [{describe_field(f)}]  {f.metadata['help']} (trainer)")
        return 0
    if args.command == "masks":
        from .masking.gallery import draw_gallery

        if not 0.0 <= args.ratio <= 1.0:
            raise UnmaskError(f"--ratio must lie in [0, 1], got {args.ratio}")
        draw_gallery(args.out, ratio=args.ratio, seed=args.seed)
        print(f"wrote {args.out}")
        return 0
    if args.command == "train":
        from .train import trainer_settings

        recipe = recipes.get(args.recipe)
        cfg, settings = _train_config(recipe, args.overrides)
        run_dir = args.out or Path("runs") / recipe.NAME
        if run_dir.exists() and not run_dir.is_dir():
            raise UnmaskError(f"--out {run_dir} is a file; give a folder")
        _check_builds(recipe, cfg)
        if args.fresh and run_dir.exists() and os.environ.get("RANK", "0") == "0":
            import shutil

            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "metrics.csv").unlink(missing_ok=True)
        import torch

        # weight initialisation draws from torch's global generator: seeded by the recipe's seed, a
        # run (and every process of a torchrun run) starts from the same weights each time
        torch.manual_seed(getattr(cfg, "seed", 0))
        with trainer_settings(**settings):
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
    written = recipe.sample(cfg, objective, args.n, out) or out  # a recipe may write another format
    print(f"wrote {written}")
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
