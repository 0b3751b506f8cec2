"""Rewrite the README's demo section (and docs/demo/) from a demo run: python scripts/readme_demo.py runs/demo."""

import sys
from pathlib import Path

from sim2real.demo.readme import update_readme
from sim2real.errors import Sim2RealError

if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "demo.json").is_file():
        print("usage: python scripts/readme_demo.py RUN_DIR (a folder `sim2real demo` wrote, holding demo.json)",
              file=sys.stderr)
        sys.exit(2)
    try:
        update_readme(Path(__file__).resolve().parent.parent, Path(sys.argv[1]))
    except Sim2RealError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
