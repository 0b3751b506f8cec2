"""`python scripts/transfer.py ...` is `sim2real transfer ...`: the same options (see --help)."""

import sys

from sim2real.cli import app

if __name__ == "__main__":
    app(["transfer", *sys.argv[1:]])
