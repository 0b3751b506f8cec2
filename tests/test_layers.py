"""The package's imports form layers: no module imports, at its top level, one that imports it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_has_no_import_cycle():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no import cycle, between modules or between packages" in result.stdout


def test_a_cycle_is_found_and_named(tmp_path):
    package = tmp_path / "sim2real"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("from sim2real import high\n")
    (package / "high.py").write_text("import sim2real.low\n\ndef later():\n    from sim2real import low\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cycle: sim2real." in result.stdout and "sim2real.low" in result.stdout and "sim2real.high" in result.stdout
    assert "inside a function: sim2real.high → sim2real.low" in result.stdout


def test_a_cycle_between_subpackages_is_found(tmp_path):
    for package in ("sim2real", "sim2real/low", "sim2real/high"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "sim2real" / "low" / "base.py").write_text("")
    (tmp_path / "sim2real" / "low" / "top.py").write_text("from sim2real.high import middle\n")
    (tmp_path / "sim2real" / "high" / "middle.py").write_text("from sim2real.low import base\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1  # no cycle between modules, one between the subpackages low and high
    assert "cycle: sim2real." in result.stdout


def test_a_unit_worker_imports_neither_the_harness_nor_the_report_through_the_experiment_package():
    code = ("import sys; import sim2real.experiment.unit; from sim2real import experiment; "
            "print(sorted(m for m in ('matplotlib', 'sim2real.experiment.harness', 'sim2real.experiment.report') "
            "if m in sys.modules)); experiment.make_plan; print('sim2real.experiment.plan' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]  # the package's names load on first use, not before
