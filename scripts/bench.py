"""`python scripts/bench.py ...` is `sim2real bench ...`: the same options (see --help)."""

import sys

from sim2real.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
