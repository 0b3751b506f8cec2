"""Errors split by what a user does next: bad input exits 2 (fix it), a failure exits 1 (rerun to resume)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from sim2real.cli.common import user_errors
from sim2real.errors import RunFailure, Sim2RealError
from sim2real.experiment.backend_base import WorkerError, failure
from sim2real.robot.link import RobotLost
from sim2real.vec_env import EnvWorkerError


def invoke(error: Exception):
    app = typer.Typer()

    @app.command()
    @user_errors
    def command() -> None:
        raise error

    return CliRunner().invoke(app, [])


def test_bad_input_exits_2_and_a_crashed_unit_exits_1_each_in_one_line():
    bad = invoke(Sim2RealError("--budget -1 is not accepted; give an integer >= 1"))
    crashed = invoke(failure([("wet/scratch/0", RuntimeError("the worker process died"))]))
    assert bad.exit_code == 2 and crashed.exit_code == 1
    assert bad.stderr.strip() == "error: --budget -1 is not accepted; give an integer >= 1"
    assert crashed.stderr.startswith("failed: 1 unit(s) failed (wet/scratch/0: RuntimeError: the worker process died)")
    assert "rerun to resume" in crashed.stderr and len(crashed.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr + crashed.stderr


def test_what_no_change_of_input_fixes_is_a_failure_and_no_error_is_a_value_error():
    for kind in (WorkerError, EnvWorkerError, RobotLost):
        assert issubclass(kind, RunFailure)
    assert not issubclass(Sim2RealError, ValueError)  # a crashed worker is not a typo
