"""Transfer on the robot: journaled steps, recovery of a step left pending, crashes of both sides, bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sim2real.robot.audit import audit
from sim2real.robot.journal import END, STEP, Journal, read_journal
from sim2real.robot.link import RobotLink
from sim2real.testbed.applied import applied_steps
from sim2real.testbed.process import ServerProcess
from sim2real.testbed.realtime import Realtime

ROOT = Path(__file__).resolve().parents[1]
PENDULUM = "Pendulum-v1"


def _link(server: ServerProcess, journal: Journal, counts: dict[str, int], session: str | None) -> RobotLink:
    link = RobotLink(server.address, None, journal, counts, session=session, on_transition=None,
                     cut_now=lambda: False, reconnect_timeout=20)
    link.open(first=session is None)
    return link


def _crash_with_pending(path: Path, server: ServerProcess, send: bool) -> None:
    """Three steps, then a fourth whose intent is journaled and (if `send`) applied, but whose result is not."""
    journal = Journal(path)
    link = _link(server, journal, {"train": 0, "eval": 0}, None)
    assert link.train_env is not None and link.remote is not None
    link.train_env.reset(seed=0)
    for _ in range(3):
        link.train_env.step(np.zeros(1, dtype=np.float32))
    action = np.array([0.5], dtype=np.float32)
    episode, seq = link.remote.episode, link.remote.seq + 1
    journal.write("intent", phase="train", episode=episode, seq=seq, action=action.tolist())
    if send:
        link.remote.step(action)
    link.remote._link.drop()  # the process "dies": no CLOSE, no result journaled
    journal.close()


@pytest.mark.parametrize("send", [True, False], ids=["applied-before-the-crash", "never-sent"])
def test_a_step_left_pending_by_a_client_crash_is_applied_once_and_journaled_once(tmp_path: Path, send: bool):
    log, path = tmp_path / "applied.jsonl", tmp_path / "journal.jsonl"
    with ServerProcess(PENDULUM, applied_log=str(log)) as server:
        _crash_with_pending(path, server, send)
        state = read_journal(path)
        assert state.pending is not None and state.pending.seq == 4 and state.session is not None
        journal = Journal(path)
        link = _link(server, journal, dict(state.steps), state.session)
        link.resolve(state.pending)
        link.close()
        journal.close()
    result = audit(log, [path])
    assert result.exact, result
    assert result.applied == 4
    after = read_journal(path)
    assert after.pending is None and after.train_steps == 4 and len(after.transitions) == 4
    np.testing.assert_array_equal(after.transitions[-1].action, [0.5])


def _crash_both_then_resolve(tmp_path: Path, send: bool, after=None) -> tuple[Path, Path]:
    """A client crash with a step pending, the server killed too, then a restarted server and a resumed link."""
    log, path = tmp_path / "applied.jsonl", tmp_path / "journal.jsonl"
    with ServerProcess(PENDULUM, applied_log=str(log)) as server:
        port = server.port
        _crash_with_pending(path, server, send=send)
        server.process.kill()
        server.process.wait()
    state = read_journal(path)
    with ServerProcess(PENDULUM, applied_log=str(log), port=port) as restarted:
        journal = Journal(path)
        link = _link(restarted, journal, dict(state.steps), state.session)
        assert link.remote is not None and link.remote.session == state.session
        link.resolve(state.pending)
        if after is not None:
            after(link)
        link.close()
        journal.close()
    return log, path


def test_a_restarted_server_answers_the_resent_step_from_its_log_and_numbers_episodes_on(tmp_path: Path):
    def new_episode(link: RobotLink) -> None:
        link.train_env.reset(seed=1)  # a new episode, numbered after the last one the log knows
        assert link.remote.episode == 2
        link.train_env.step(np.zeros(1, dtype=np.float32))

    log, path = _crash_both_then_resolve(tmp_path, send=True, after=new_episode)
    result = audit(log, [path])
    assert result.exact and result.applied == 5, result
    assert applied_steps(log)[3] == (1, 4)


def test_a_restarted_server_says_a_step_it_never_applied_was_not_applied(tmp_path: Path):
    log, path = _crash_both_then_resolve(tmp_path, send=False)
    ends = [json.loads(line) for line in path.read_text().splitlines() if '"end"' in line]
    assert ends and "was not applied" in ends[-1]["reason"]
    result = audit(log, [path])
    assert result.exact and result.applied == 3, result
    assert read_journal(path).pending is None


def test_realtime_steps_no_faster_than_the_control_period():
    import gymnasium as gym

    env = Realtime(gym.make(PENDULUM), period=0.02)
    env.reset(seed=0)
    start = time.monotonic()
    for _ in range(10):
        env.step(env.action_space.sample())
    assert time.monotonic() - start >= 9 * 0.02
    assert env.control_hz == pytest.approx(50.0)


def test_a_robot_run_survives_server_and_client_kills_with_every_step_once(tmp_path: Path):
    """The fault run, small: 2 server kills and 2 client SIGKILLs, then the audit and a complete, resumable run."""
    out = tmp_path / "fault"
    command = [sys.executable, str(ROOT / "scripts" / "robot_fault_run.py"), "grasping", "--target", "warehouse",
               "--policy", "grasping-ppo-nominal", "--budget", "900", "--eval-every", "300", "--episodes", "2",
               "--server-kills", "2", "--client-kills", "2", "--mean-gap", "3", "--seed", "3", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "audit.json").read_text())
    assert summary["exact"] and summary["applied"] == summary["journaled"] > 900
    assert len(summary["kills"]) >= 2
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in records] == [0, 300, 600, 900]
    assert records[-1]["robot_steps"]["train"] == 900
    journal = read_journal(next((out / "units").glob("*/journal.jsonl")))
    assert journal.train_steps == 900 and len(journal.transitions) == 900
    assert all(json.loads(line)["kind"] in {STEP, END, "intent", "reset", "session"}
               for line in next((out / "units").glob("*/journal.jsonl")).read_text().splitlines())


def _transfer_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim2real", "transfer", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "finetune"], "finetune cannot run against a remote env: finetune on a PPO policy trains "
                                       "on-policy"),
        (["--strategies", "sysid_finetune"], "sysid_finetune cannot run against a remote env"),
        (["--budget", "100", "--eval-every", "200"], "the budget (100 steps) is smaller than eval_every (200)"),
        (["--target", "truck"], "--target truck with --testbed: the robot is the target"),
        (["--policy", "grasping-ppo-nominal"], "observation"),
    ],
    ids=["on-policy", "transductive", "budget", "target", "spaces"],
)
def test_robot_transfer_bad_input_is_one_line_before_the_robot_moves(tmp_path: Path, args: list[str], message: str):
    log = tmp_path / "applied.jsonl"
    with ServerProcess("sim2real.factory:make_env", {"task": "driving", "target": "truck"},
                       applied_log=str(log)) as server:
        base = ["driving", "--testbed", server.address, "--policy", "driving-ppo-nominal", "--out", str(tmp_path / "o")]
        result = _transfer_cli(*base, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert applied_steps(log) == []


def test_robot_transfer_to_an_unreachable_address_is_one_line(tmp_path: Path):
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _transfer_cli("grasping", "--testbed", f"tcp://127.0.0.1:{port}", "--policy", "grasping-ppo-nominal",
                           "--budget", "100", "--eval-every", "50", "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused the connection" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
