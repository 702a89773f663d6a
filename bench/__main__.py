"""`python -m bench [NAME...]`: run every bench/bench_*.py (or the named ones), one process each.

Each benchmark runs in a fresh interpreter with the glibc malloc settings of
`bench.results.MALLOC_TUNING` (unless `--malloc-defaults`), and writes its own section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.results import MALLOC_TUNING

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of: {', '.join(available())}"
    )
    parser.add_argument(
        "--malloc-defaults", action="store_true", help="do not set the MALLOC_* tuning"
    )
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have {', '.join(available())})")
    env = dict(os.environ)
    if args.malloc_defaults:
        for key in MALLOC_TUNING:
            env.pop(key, None)
    else:
        env = {**MALLOC_TUNING, **env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call(
            [sys.executable, "-c", f"import bench.bench_{name} as b; b.main()"],
            cwd=HERE.parent,
            env=env,
        )
        print(f"== bench {name}: exit {code} after {time.monotonic() - started:.1f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
