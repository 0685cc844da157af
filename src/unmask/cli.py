"""The command line: `unmask train | sample | eval | recipes | masks | tokenizer | tokenize | prepare | export`.

    unmask train digits --out runs/digits train.steps=800 train.lr=1e-3 model.dim=64
    unmask eval runs/digits sampler.name=first-hitting
    unmask sample runs/digits --n 100 --out samples.png
    unmask recipes                  # every recipe
    unmask recipes digits           # its settings tree: defaults, allowed values, help
    unmask masks --out masks.png
    unmask export runs/mlm-bert --to hf out/mlm-bert     # a Hugging Face folder (docs/export.md)
    unmask tokenizer train corpus/ --out tokenizer.json --kind bpe --vocab-size 4096
    unmask prepare corpus/ --tokenizer tokenizer.json --out shards/    # token shards: data.source=shards/
    unmask tokenize runs/glyphs-vq --set glyphs --split train --out glyphs.safetensors  # image tokens

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
    t.add_argument("--out", type=_path, help="run folder (default runs/RECIPE)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--fresh", action="store_true", help="ignore checkpoints already in the folder")
    t.add_argument("--change", action="append", default=[], metavar="KEY",
                   help="resume although KEY differs from the checkpoint's setting (only train.steps)")
    e = sub.add_parser("eval", help="evaluate a trained run again")
    e.add_argument("run_dir", type=Path)
    e.add_argument("overrides", nargs="*", help="sampler.* and eval.* settings")
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("overrides", nargs="*", help="sampler.* and eval.* settings")
    s.add_argument("--n", type=int, default=100, help="samples to draw")
    s.add_argument("--prompt", help=f"prompt of every sample (recipes that take one: {', '.join(_prompted())})")
    s.add_argument("--out", type=_path,
                   help="file (or folder) to write; its suffix must be the recipe's (PNG images, text, MIDI, TSV "
                        "molecules, WAV speech, GIF motion: `unmask recipes` lists them); default "
                        "RUN_DIR/samples.SUFFIX")
    x = sub.add_parser("export", help="write a trained run as a Hugging Face folder or safetensors + config")
    x.add_argument("run_dir", type=Path)
    x.add_argument("--to", choices=("hf", "unmask"), required=True, help="hf: transformers; unmask: unmask.load")
    x.add_argument("out", type=Path, help="the folder to write")
    x.add_argument("--force", action="store_true", help="replace OUT when it exists and is not empty")
    r = sub.add_parser("recipes", help="list recipes, or one recipe's settings")
    r.add_argument("name", nargs="?", help="a recipe: print its settings tree")
    k = sub.add_parser("tokenizer", help="train a tokenizer on your own text")
    ks = k.add_subparsers(dest="action", required=True, parser_class=_Parser)
    kt = ks.add_parser("train", help="train BPE or WordPiece on what data.source reads; writes a tokenizer.json")
    kt.add_argument("source", help="a file, folder, glob, .jsonl, .parquet or `datasets` folder")
    kt.add_argument("--out", type=Path, default=Path("tokenizer.json"), help="tokenizer.json to write")
    kt.add_argument("--kind", choices=("bpe", "wordpiece"), default="bpe", help="byte-level BPE or WordPiece")
    kt.add_argument("--vocab-size", type=int, default=8192, help="tokens, the 10 special ones included")
    kt.add_argument("--text-column", default="text", help="the column of rows that holds the text")
    it = sub.add_parser("tokenize", help="store an embedded image set as the tokens of a trained image tokenizer "
                                         "run (safetensors); not `tokenizer`, which trains text BPE")
    it.add_argument("run_dir", type=Path, help="an image-tokenizer run, or a run with a tokenizer role (RUN/tokenizer)")
    it.add_argument("--set", required=True, help="embedded image set: glyphs, emoji, faces or digits")
    it.add_argument("--split", default="train", help="train or test")
    it.add_argument("--out", type=_path, required=True, help="safetensors file to write (tokens, labels, metadata)")
    pr = sub.add_parser("prepare", help="tokenise a corpus once into memory-mapped token shards (data.source=OUT)")
    pr.add_argument("source", help="text files: a file, folder or glob (with --verify: a shard set)")
    pr.add_argument("--tokenizer", type=Path, help="the tokenizer.json to tokenise with")
    pr.add_argument("--out", type=Path, help="the shard set's folder to write (must not exist)")
    pr.add_argument("--shard-mb", type=float, default=256, help="MiB per shard file at most")
    pr.add_argument("--test-share", type=float, default=0.01, help="share of files held out (by path hash)")
    pr.add_argument("--separator", default="", help="token after each document; default: the end-of-text one")
    pr.add_argument("--verify", action="store_true", help="check SOURCE, a shard set, against its checksums")
    pr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    m = sub.add_parser("masks", help="draw every masker on grid, video and streams layouts")
    m.add_argument("--out", type=Path, default=Path("masks.png"), help="PNG to write")
    m.add_argument("--ratio", type=float, default=0.5, help="share hidden, in [0, 1]")
    m.add_argument("--seed", type=int, default=0, help="seed of the drawn masks")
    return p


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path")
    return Path(text)


def _prompted() -> list[str]:
    """The recipes whose samples take a prompt (`--prompt`)."""
    from . import recipes

    return sorted(name for name, cls in recipes.RECIPES.items() if cls.takes_prompt)


def _sample_file(out: Path | None, run_folder: Path, suffix: str) -> Path:
    """Where `sample` writes: RUN/samples.SUFFIX by default, FOLDER/samples.SUFFIX for an existing
    folder, OUT.SUFFIX for a name without a suffix; another suffix is refused."""
    if out is None:
        return run_folder / f"samples{suffix}"
    if out.is_dir():
        return out / f"samples{suffix}"
    if not out.suffix:
        return out.with_suffix(suffix)
    if out.suffix.lower() != suffix:
        raise UnmaskError(f"--out {out}: this recipe writes {suffix} files, not {out.suffix}")
    return out


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
    if args.command == "tokenizer":
        from .data.tokenizer_train import train_from_source

        out, size, docs = train_from_source(args.source, args.out, args.kind, args.vocab_size, args.text_column)
        print(f"wrote {out} ({args.kind}, {size} tokens, trained on {docs} documents)")
        return 0
    if args.command == "tokenize":
        from .recipes.image_tokenizer import stored_set

        meta = stored_set(args.run_dir, args.set, args.split, args.out)
        h, w = meta["grid"]
        print(f"wrote {args.out}: {meta['images']} {meta['set']} {meta['split']} images as {h}x{w} tokens of "
              f"{meta['codebook_size']} codes ({meta['bits_per_image']:.1f} bits per image)")
        return 0
    if args.command == "prepare":
        _prepare(args)
        return 0
    if args.command == "masks":
        from .masking.gallery import draw_gallery

        if not 0.0 <= args.ratio <= 1.0:
            raise UnmaskError(f"--ratio must lie in [0, 1], got {args.ratio}")
        draw_gallery(args.out, ratio=args.ratio, seed=args.seed)
        print(f"wrote {args.out}")
        return 0
    if args.command == "train":
        from .train.lock import hold

        recipe = recipes.get(args.recipe)().with_overrides(args.overrides)
        run = recipes.Run(args.out or Path("runs") / recipe.name, progress=not args.no_progress,
                          changes=frozenset(args.change))
        _check_builds(recipe)
        with hold(run.folder):
            if args.fresh and os.environ.get("RANK", "0") == "0":
                import shutil

                shutil.rmtree(run.folder / "checkpoints", ignore_errors=True)
                (run.folder / "metrics.csv").unlink(missing_ok=True)
            _print_metrics(run.folder, recipe.train(run))
        return 0
    if args.command == "export":
        from .export import export_run

        print(f"wrote {export_run(args.run_dir, args.to, args.out, force=args.force)}")
        return 0
    if args.command == "sample" and args.n < 1:
        raise UnmaskError(f"--n must be >= 1, got {args.n}")
    recipe, objective, run = recipes.load_run(args.run_dir, args.overrides)
    if args.command == "eval":
        _print_metrics(run.folder, recipe.evaluate(run, objective))
        return 0
    from .recipes.memory import check_fits

    check_fits(recipe.settings, recipe.name, n_generate=args.n)
    if args.prompt is not None and not recipe.takes_prompt:
        raise UnmaskError(f"recipe {recipe.name!r} takes no --prompt (recipes that do: {', '.join(_prompted())})")
    prompt = {} if args.prompt is None else {"prompt": args.prompt}
    out = _sample_file(args.out, run.folder, recipe.sample_suffix)
    print(f"wrote {recipe.sample(run, objective, args.n, out, **prompt)}")
    return 0


def _prepare(args) -> None:
    from .data import shards

    if args.verify:
        found = shards.verify(args.source)
        print(f"{found.folder}: {found.index['total_tokens']} tokens in "
              f"{sum(len(s) for s in found.splits.values())} shards, every checksum matches")
        return
    if args.tokenizer is None or args.out is None:
        raise UnmaskError("prepare needs --tokenizer TOKENIZER.json and --out FOLDER")
    index = shards.prepare(args.source, args.tokenizer, args.out, shard_mb=args.shard_mb, test_share=args.test_share,
                           separator=args.separator, progress=not args.no_progress)
    train, test = index["splits"]["train"], index["splits"]["test"]
    skipped = sum(v["count"] for v in index["skipped"].values())
    print(f"wrote {args.out}: {train['tokens']} training tokens ({train['documents']} documents, "
          f"{len(train['shards'])} shards), {test['tokens']} held-out tokens ({test['documents']} documents), "
          f"{index['dtype']}; {skipped} files skipped")


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
