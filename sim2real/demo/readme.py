"""The README's demo section: rewritten from a demo run, and checked against it.

The section sits between `BEGIN` and `END`; `update_readme` replaces it with the section rendered
from a run's demo.json, and keeps that demo.json beside the README (docs/demo/demo.json) so a
test can render it again and compare.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sim2real.demo.cases import settings
from sim2real.demo.page import render_readme_section
from sim2real.demo.summary import SUMMARY_FILE, read_summary
from sim2real.errors import Sim2RealError
from sim2real.records import write_bytes_atomic

BEGIN = "<!-- demo:begin (written by scripts/readme_demo.py from docs/demo/demo.json) -->"
END = "<!-- demo:end -->"
KEPT_RUN = Path("docs/demo/demo.json")
"""Where, relative to the project root, the demo run behind the README's numbers is kept."""
KEPT_FIGURE = Path("docs/demo/curves-grasping-warehouse.png")
"""The demo's warehouse curves, shown at the top of the README."""
DEMO_LINE = re.compile(r"(make demo +# .*\(about )(\d+)( minutes on 2 cores\))")
"""The README's first-screen line for `make demo`, whose minutes are those of the kept run."""


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


def stated_minutes(readme: str) -> int | None:
    """The minutes the README's first screen says `make demo` takes, or None when the line is missing."""
    found = DEMO_LINE.search(readme)
    return None if found is None else int(found.group(2))


def update_readme(root: Path, run_dir: Path) -> None:
    """Copy the run's demo.json and warehouse curves to `root`/docs/demo; rewrite the README's demo section, time."""
    summary = read_summary(run_dir / SUMMARY_FILE)
    if summary.settings != settings():
        raise Sim2RealError(f"{run_dir} was run with other settings than the demo's defaults (sim2real/demo/cases.py); "
                            f"the README shows a run of `make demo` as shipped")
    if summary.resumed:
        raise Sim2RealError(f"{run_dir} resumed an earlier run, so its time is not the demo's; run `make demo` into "
                            f"a new folder (sim2real demo --out DIR) and take the README's numbers from that")
    readme = root / "README.md"
    text = readme.read_text()
    start, end = section_span(text)
    (root / KEPT_RUN).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / SUMMARY_FILE, root / KEPT_RUN)
    shutil.copyfile(run_dir / summary.runs["warehouse"] / "curves.png", root / KEPT_FIGURE)
    text = text[:start] + render_readme_section(summary) + "\n" + text[end:]
    text = DEMO_LINE.sub(lambda m: f"{m.group(1)}{round(summary.wall_seconds / 60)}{m.group(3)}", text)
    write_bytes_atomic(readme, text.encode())
