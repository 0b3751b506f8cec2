"""`python scripts/train.py ...` is `sim2real train ...`: the same options (see --help)."""

import sys

from sim2real.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]])
