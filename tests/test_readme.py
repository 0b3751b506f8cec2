"""Every command the README shows runs: blocks fenced as ```bash readme-test are executed in order."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim2real.demo.cases import settings
from sim2real.demo.page import render_readme_section
from sim2real.demo.readme import KEPT_RUN, readme_section, stated_minutes
from sim2real.demo.summary import read_summary

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI = [sys.executable, "-m", "sim2real.cli"]


def readme_commands(kind: str) -> list[list[str]]:
    """The `sim2real ...` command lines of the README's ```bash <kind> blocks, comments stripped."""
    commands = []
    for block in re.findall(rf"```bash {kind}\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "sim2real":
                commands.append(words[1:])
    return commands


def test_the_readme_has_tested_blocks():
    assert len(readme_commands("readme-test")) >= 5
    assert len(readme_commands("readme-testbed")) == 2
    assert len(readme_commands("readme-testbed-secure")) == 4


@pytest.mark.parametrize("args", readme_commands("readme-test"), ids=lambda a: " ".join(a[:2]))
def test_readme_command_runs(args: list[str], tmp_path_factory):
    workdir = tmp_path_factory.getbasetemp() / "readme"
    workdir.mkdir(exist_ok=True)
    result = subprocess.run([*CLI, *args], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: list[str], cwd: Path) -> subprocess.Popen:
    """`sim2real serve ARGS` in the background, returned once it listens."""
    server = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "LISTENING" not in (line := server.stdout.readline()) and time.monotonic() < deadline:
        assert line or server.poll() is None, server.stderr.read()
    return server


@pytest.mark.parametrize(("kind", "out"), [("readme-testbed", "testbed"), ("readme-testbed-secure", "testbed-tls")])
def test_readme_testbed_commands_run(tmp_path: Path, kind: str, out: str):
    """The commands before `serve` run first, then the server in the background, then the clients."""
    commands = readme_commands(kind)
    at = next(index for index, args in enumerate(commands) if args[0] == "serve")
    serve_args, clients = commands[at], commands[at + 1:]
    readme_port = serve_args[serve_args.index("--port") + 1]
    port = str(free_port())
    serve_args = [port if word == readme_port else word for word in serve_args if word != "&"]
    for args in commands[:at]:
        result = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    server = start_server(serve_args, tmp_path)
    try:
        for args in clients:
            args = [word.replace(f":{readme_port}", f":{port}") for word in args]
            result = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "runs" / out / "summary.json").exists()
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_readme_robot_commands_run_on_a_short_budget(tmp_path: Path):
    """The README's robot block, its budget cut to 200 steps and the pacing dropped so it fits the fast suite."""
    serve_args, transfer_args = readme_commands("readme-robot")
    readme_port = serve_args[serve_args.index("--port") + 1]
    port = str(free_port())
    serve_args = [port if word == readme_port else word for word in serve_args if word not in ("&", "--realtime")]
    short = {"--budget": "200", "--eval-every": "100", "--episodes": "2"}
    transfer_args = [word.replace(f":{readme_port}", f":{port}") for word in transfer_args]
    previous = ["", *transfer_args[:-1]]
    transfer_args = [short.get(before, word) for before, word in zip(previous, transfer_args, strict=True)]
    server = start_server(serve_args, tmp_path)
    try:
        result = subprocess.run([*CLI, *transfer_args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        out = tmp_path / transfer_args[transfer_args.index("--out") + 1]
        assert json.loads((out / "report.json").read_text())["units"]["testbed/residual/0"]["complete"]
        assert (tmp_path / "runs" / "lab" / "applied.jsonl").exists()
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_the_readme_demo_numbers_are_those_of_a_demo_run_with_the_demo_defaults():
    summary = read_summary(ROOT / KEPT_RUN)
    assert summary.settings == settings(), (
        f"{KEPT_RUN} was run with other settings than sim2real/demo/cases.py's: rerun `make demo`, then "
        f"`python scripts/readme_demo.py runs/demo`")
    readme = README.read_text()
    assert readme_section(readme) == render_readme_section(summary)
    assert stated_minutes(readme) == round(summary.wall_seconds / 60)
