"""The README's demo section: rewritten from a demo run, and checked against it.

The section sits between `BEGIN` and `END`; `update_readme` replaces it with the section rendered
from a run's demo.json, and keeps that demo.json beside the README (docs/demo/demo.json) so a
test can render it again and compare.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from sim2real.demo.page import render_readme_section
from sim2real.demo.run import DemoSummary
from sim2real.errors import Sim2RealError
from sim2real.records import write_bytes_atomic

BEGIN = "<!-- demo:begin (written by scripts/readme_demo.py from docs/demo/demo.json) -->"
END = "<!-- demo:end -->"
KEPT_RUN = Path("docs/demo/demo.json")
"""Where, relative to the project root, the demo run behind the README's numbers is kept."""
KEPT_FIGURE = Path("docs/demo/curves-driving-truck.png")
"""The demo's truck curves, shown at the top of the README."""


def section_span(readme: str) -> tuple[int, int]:
    """Where the text between the README's demo marker lines starts and ends; an error when they are missing."""
    found = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), readme, flags=re.S)
    if found is None:
        raise Sim2RealError(f"the README has no demo section: add the lines {BEGIN!r} and {END!r}")
    return found.span(1)


def readme_section(readme: str) -> str:
    """The README's demo section as written, without its last line break."""
    start, end = section_span(readme)
    return readme[start:end].removesuffix("\n")


def read_summary(path: Path) -> DemoSummary:
    """A demo run's demo.json."""
    return DemoSummary.from_json(json.loads(path.read_text()))


def update_readme(root: Path, run_dir: Path) -> None:
    """Copy the run's demo.json and truck curves under `root`/docs/demo, and rewrite the README's demo section."""
    summary = read_summary(run_dir / "demo.json")
    readme = root / "README.md"
    text = readme.read_text()
    start, end = section_span(text)
    (root / KEPT_RUN).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "demo.json", root / KEPT_RUN)
    shutil.copyfile(run_dir / summary.runs["truck"] / "curves.png", root / KEPT_FIGURE)
    write_bytes_atomic(readme, (text[:start] + render_readme_section(summary) + "\n" + text[end:]).encode())
