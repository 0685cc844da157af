"""Run every side-by-side benchmark in turn; each prints its own timings and ratios.

    .venv/bin/python benchmarks/run_all.py            # after: pip install -e '.[bench,text]'
    .venv/bin/python benchmarks/run_all.py masked_head samplers_vs_peers

Benchmarks need the `bench` extra (transformers, diffusers, x-transformers); those that train on
the standard library's code also need the `text` extra (tokenizers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["masked_head", "mae_vs_transformers", "mlm_vs_transformers", "samplers_vs_peers",
              "first_hitting_exactness"]


def main(names: list[str]) -> int:
    failed = []
    for name in names or BENCHMARKS:
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, str(HERE / f"{name}.py")]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
