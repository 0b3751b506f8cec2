"""`python scripts/evaluate.py ...` is `sim2real evaluate ...`: the same options (see --help)."""

import sys

from sim2real.cli import app

if __name__ == "__main__":
    app(["evaluate", *sys.argv[1:]])
