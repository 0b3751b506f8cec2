"""A robot run through crashes: the server and the client are killed at random moments and restarted.

    python scripts/robot_fault_run.py grasping --target warehouse --policy grasping-ppo-nominal \
        --budget 8000 --eval-every 2000 --episodes 20 --server-kills 5 --client-kills 5 --realtime --out DIR

The stand-in serves with an applied-step log, so a restarted server resumes; the client is the
`sim2real transfer --testbed` command, rerun unchanged after each SIGKILL. At the end the server's
log is audited against the run's journal (no step applied twice, none lost, none invented) and
the audit is written to DIR/audit.json. Kill moments come from a seeded numpy Generator.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sim2real.robot.audit import audit
from sim2real.robot.run import UNITS_DIR


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server is restarted on the same one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`sim2real serve` with the applied-step log, in its own process; returns once it listens."""
    command = [sys.executable, "-m", "sim2real", "serve", args.task, "--target", args.target, "--port", str(port),
               "--applied-log", str(log)] + (["--realtime"] if args.realtime else [])
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith(b"LISTENING"):
            return server
    raise RuntimeError(f"the server exited with {server.wait()} before listening")


def start_client(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    """The unchanged `sim2real transfer --testbed` command."""
    command = [sys.executable, "-m", "sim2real", "transfer", args.task, "--testbed", f"tcp://127.0.0.1:{port}",
               "--policy", args.policy, "--strategies", args.strategies, "--budget", str(args.budget),
               "--eval-every", str(args.eval_every), "--episodes", str(args.episodes), "--out", str(args.out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def restart_failed(args: argparse.Namespace, port: int, client: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Say why the client exited and start it again, as a user rerunning the command would."""
    assert client.stderr is not None
    print(f"the client exited: {client.stderr.read().decode()[-300:]!r}; rerunning", flush=True)
    return start_client(args, port)


def main(argv: list[str] | None = None) -> int:
    """Run, kill and restart; audit; print the audit and exit 0 only when it is exact."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--target", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--strategies", default="residual")
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--server-kills", type=int, default=5)
    parser.add_argument("--client-kills", type=int, default=5)
    parser.add_argument("--mean-gap", type=float, default=60.0, help="mean seconds between kills")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists; the audit needs a fresh run")
    args.out.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    kills = ["server"] * args.server_kills + ["client"] * args.client_kills
    rng.shuffle(kills)
    port, log = free_port(), args.out / "applied.jsonl"
    started = time.monotonic()
    server = start_server(args, port, log)
    client = start_client(args, port)
    done = []
    try:
        for victim in kills:
            deadline = time.monotonic() + rng.exponential(args.mean_gap)
            while time.monotonic() < deadline and client.poll() is None:
                time.sleep(0.05)
            if client.poll() == 0:
                break
            if client.poll() is not None:  # a fresh client refused by a server being restarted: rerun it
                client = restart_failed(args, port, client)
            if victim == "server":
                server.send_signal(signal.SIGKILL)
                server.wait()
                time.sleep(rng.uniform(0.0, 2.0))
                server = start_server(args, port, log)
            else:
                client.send_signal(signal.SIGKILL)
                client.wait()
                client = start_client(args, port)
            done.append((victim, round(time.monotonic() - started, 1)))
            print(f"killed the {victim} at {done[-1][1]} s", flush=True)
        while client.wait() != 0:
            client = restart_failed(args, port, client)
    finally:
        if client.poll() is None:
            client.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    result = audit(log, sorted((args.out / UNITS_DIR).glob("*/journal.jsonl")))
    report = json.loads((args.out / "report.json").read_text())
    summary = {"kills": done, "wall_seconds": round(time.monotonic() - started, 1), **result.to_json(),
               "final": {key: unit["curve"] for key, unit in report["units"].items()}}
    (args.out / "audit.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "final"} | {"exact": result.exact}))
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
