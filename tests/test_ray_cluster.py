"""The Ray backend on a real two-node cluster on this machine, bound to loopback, with token authentication.

Two Ray nodes of one CPU each (``ray.cluster_utils.Cluster``, every node at 127.0.0.1, a token
in RAY_AUTH_TOKEN) run the harness's tiny Pendulum plan: the records must be the local pool's,
units must run on both nodes, and a Ray worker killed mid-unit or a driver killed mid-run must
cost nothing but time.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_task
from test_harness import CARD, LINE_TASK, TASK, report_numbers, tiny_pendulum_bundle, without_wall_time

from sim2real import experiment
from sim2real.errors import Sim2RealError
from sim2real.experiment import PLAN_FILE, RESULTS_FILE, UNITS_FILE
from sim2real.experiment.backends import WorkerError
from sim2real.records import read_jsonl

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

from ray._private.authentication_test_utils import reset_auth_token_state  # noqa: E402  (Ray's own test helper)
from ray.cluster_utils import Cluster  # noqa: E402  (after the skip: Ray is an optional extra)

from sim2real.experiment.ray_backend import (  # noqa: E402
    MAX_RETRIES,
    UNIT_MEMORY,
    RayBackend,
    RayConnectionError,
    check_reachable,
)

LOOPBACK = "127.0.0.1"
DRIVER = """
import sys
from sim2real import experiment
task, policy, out, address = sys.argv[1:5]
experiment.run(experiment.make_plan(task, policy, "heavy"), out, backend="ray", ray_address=address)
"""


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """What every process of the cluster and its drivers needs: a token, and loopback addresses only.

    Ray turns 127.0.0.1 into the machine's own address unless it thinks it runs on a laptop
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), so that flag keeps every node and driver on loopback.
    """
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def client_port() -> int:
    """A loopback port nothing listens on now, for the head node's Ray Client server."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(cluster_env, client_port):
    """Two Ray nodes of one CPU each on 127.0.0.1, token authentication on."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster_env.items():
            patch.setenv(name, value)
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        reset_auth_token_state()  # this process read RAY_AUTH_MODE when Ray was imported
        with warnings.catch_warnings():  # Ray drops its client server's log files unclosed
            warnings.simplefilter("ignore", ResourceWarning)
            nodes = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False,
                "ray_client_server_port": client_port})
            gc.collect()
        nodes.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        try:
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()
    reset_auth_token_state()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, experiment.Plan]:
    """The harness tests' tiny Pendulum task, its policy and their plan."""
    task = write_task(tmp_path_factory, "tiny", TASK)
    policy = tiny_pendulum_bundle(task, tmp_path_factory.mktemp("zoo") / "tiny-ppo", CARD)
    return task, policy, experiment.make_plan(task, policy, "heavy")


@pytest.fixture(scope="module")
def local_run(tiny, tmp_path_factory) -> Path:
    """The same plan on the local pool: the reference every cluster run must match."""
    return experiment.run(tiny[2], tmp_path_factory.mktemp("runs") / "local", workers=2)


def _processes(matches: Callable[[bytes], bool]) -> list[int]:
    """Pids of the processes whose command line `matches`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if matches(cmdline.read_bytes()):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _unit_processes() -> list[int]:
    """Pids of Ray workers running a unit now (Ray titles them after the task: ray::_task)."""
    return _processes(lambda cmdline: cmdline.startswith(b"ray::_task"))


def _kill_one_unit(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a unit for a second (mid-unit), once."""
    while not stop.is_set():
        running = _unit_processes()
        if running:
            time.sleep(1.0)
            if running[0] in _unit_processes():
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
                return
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers in /proc")
def test_two_nodes_give_the_local_records_through_a_worker_killed_mid_unit(cluster, tiny, local_run, tmp_path):
    plan = tiny[2]
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_unit, args=(killed, stop), daemon=True)
    killer.start()
    try:
        run_dir = experiment.run(plan, tmp_path / "ray", backend="ray", ray_address=cluster.address)
    finally:
        stop.set()
        killer.join()
    assert killed, "no unit was seen running to kill"
    records = read_jsonl(run_dir / RESULTS_FILE)
    assert len({(r["unit"], r["steps"]) for r in records}) == len(records) == 18
    assert without_wall_time(records) == without_wall_time(read_jsonl(local_run / RESULTS_FILE))
    assert report_numbers(run_dir) == report_numbers(local_run)
    placements = read_jsonl(run_dir / UNITS_FILE)
    assert sorted(p["unit"] for p in placements) == sorted(unit.key for unit in plan.units())
    assert len({p["node"] for p in placements}) == 2, "the units ran on one node only"
    execution = json.loads((run_dir / PLAN_FILE).read_text())["execution"]
    assert execution["max_retries"] == MAX_RETRIES and execution["memory_per_unit"] == UNIT_MEMORY


def test_a_driver_killed_mid_run_resumes_without_repeating_an_evaluation(cluster, cluster_env, tiny, local_run,
                                                                          tmp_path):
    task, policy, plan = tiny
    run_dir = tmp_path / "killed"
    results = run_dir / RESULTS_FILE
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(task), str(policy), str(run_dir), cluster.address],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **cluster_env})
    try:
        deadline = time.monotonic() + 180
        while driver.poll() is None and time.monotonic() < deadline and not (
                results.exists() and results.stat().st_size):
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        log.close()
    assert results.exists(), (tmp_path / "driver.log").read_text()
    before = {r["unit"] for r in read_jsonl(results)}
    assert 0 < len(before) < len(plan.units())
    progress = []
    experiment.run(plan, run_dir, backend="ray", ray_address=cluster.address, progress=progress.append)
    records = read_jsonl(results)
    assert len({(r["unit"], r["steps"]) for r in records}) == len(records) == 18
    assert without_wall_time(records) == without_wall_time(read_jsonl(local_run / RESULTS_FILE))
    assert progress[0].done == len(before)


def _kill_first_client_server(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first per-driver Ray Client server process as soon as the head's proxier starts it."""
    while not stop.is_set():
        for pid in _processes(lambda cmdline: b"specific-server" in cmdline):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's client server in /proc")
def test_a_ray_client_address_gives_the_local_records_through_a_client_server_that_died(
        cluster, cluster_env, client_port, tiny, local_run, tmp_path):
    # The head's proxier starts a server process per driver; Ray's own race kills it now and then
    # (ray-project/ray#63202). Killed here at its start, the connection is tried again.
    client = f"ray://{LOOPBACK}:{client_port}"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_client_server, args=(killed, stop), daemon=True)
    killer.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in cluster_env.items():
                patch.setenv(name, value)
            run_dir = experiment.run(tiny[2], tmp_path / "client", backend="ray", ray_address=client)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray Client server process was seen to kill"
    assert without_wall_time(read_jsonl(run_dir / RESULTS_FILE)) == without_wall_time(
        read_jsonl(local_run / RESULTS_FILE))
    assert json.loads((run_dir / PLAN_FILE).read_text())["execution"]["address"] == client


def test_a_users_env_module_ships_with_the_job(cluster, tmp_path_factory, tmp_path):
    from stable_baselines3 import PPO

    from sim2real import catalog
    from sim2real.factory import make_env
    from sim2real.zoo import save_bundle

    task = write_task(tmp_path_factory, "line", LINE_TASK)
    model = PPO("MlpPolicy", make_env(catalog.load(task), "source"), n_steps=64, batch_size=64, seed=0,
                policy_kwargs={"net_arch": [16]}).learn(128)
    bundle = save_bundle(model, tmp_path / "line-ppo", {**CARD, "task": "line"})
    plan = experiment.make_plan(task, bundle, "sensors", ["finetune", "scratch"])
    run_dir = experiment.run(plan, tmp_path / "run", backend="ray", ray_address=cluster.address)
    shipped = json.loads((run_dir / PLAN_FILE).read_text())["execution"]["runtime_env"]["py_modules"]
    assert shipped == [str(Path(__file__).with_name("conftest.py"))]
    assert len(read_jsonl(run_dir / RESULTS_FILE)) == 4


def test_a_full_cluster_is_a_visible_wait_not_a_silent_hang(cluster, cluster_env):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster_env.items():
            patch.setenv(name, value)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            blockers = [ray.remote(num_cpus=1)(subprocess.call).remote(["sleep", "6"]) for _ in range(2)]
            notices = []
            finished = list(RayBackend(cluster.address, notice_every=1.0).run(pow, 2, {"a": 3},
                                                                                 notify=notices.append))
            ray.get(blockers)
        finally:
            ray.shutdown()
    assert [(key, value) for key, value, _ in finished] == [("a", 8)]
    assert notices and "0 of 1 units finished; 0 of 2 CPUs free" in notices[0]


def _only_here(shared: int, item: int) -> int:
    """A unit function from this test module, which the cluster's workers cannot import."""
    return shared + item


def test_a_node_missing_a_module_is_a_one_line_error_naming_it(cluster, cluster_env):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster_env.items():
            patch.setenv(name, value)
        with pytest.raises(WorkerError, match=r"a: Sim2RealError: node 127.0.0.1 cannot import 'test_ray_cluster': "
                                              r"install it there .*--runtime-env"):
            list(RayBackend(cluster.address).run(_only_here, 1, {"a": 2}))


def test_an_unreachable_address_fails_in_seconds_naming_it():
    started = time.monotonic()
    with pytest.raises(RayConnectionError, match=r"cannot reach the Ray cluster at 127.0.0.1:9 .*ray start --head"):
        check_reachable("127.0.0.1:9")
    assert time.monotonic() - started < 10
    with pytest.raises(Sim2RealError, match=r"Ray address 'nohost' is not HOST:PORT"):
        check_reachable("nohost")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim2real", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_a_wrong_token_and_a_dead_address_are_one_line_errors(cluster, cluster_env, tiny, tmp_path):
    task, policy, _ = tiny
    common = ["transfer", str(task), "--policy", str(policy), "--target", "heavy", "--backend", "ray"]
    wrong = _cli([*common, "--address", cluster.address, "--out", str(tmp_path / "a")],
                 {**os.environ, **cluster_env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}, tmp_path)
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
    assert f"the Ray cluster at {cluster.address} refused this driver's token" in wrong.stderr
    assert "ray get-auth-token" in wrong.stderr
    dead = _cli([*common, "--address", "127.0.0.1:9", "--out", str(tmp_path / "b")], {**os.environ, **cluster_env},
                tmp_path)
    assert dead.returncode == 2 and dead.stderr.count("\n") == 1, dead.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in dead.stderr
    local = _cli([*common[:-1], "local", "--runtime-env", "{}", "--out", str(tmp_path / "c")], dict(os.environ),
                 tmp_path)
    assert local.returncode == 2 and "--runtime-env is for --backend ray" in local.stderr
