"""`python scripts/serve.py ...` is `sim2real serve ...`: the same options (see --help)."""

import sys

from sim2real.cli import app

if __name__ == "__main__":
    app(["serve", *sys.argv[1:]])
