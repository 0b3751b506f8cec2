"""An SB3 VecEnv that steps its envs in groups, one group in this process and one per other core.

SB3's SubprocVecEnv gives every env its own process, and each process imports torch and SB3
(~3.5 s of CPU): eight driving envs on two cores took 15 s to start and, since every env step
costs a pipe round trip and a context switch, stepped no faster than one process. Here the envs
are split into one group per core: the first group steps in this process while each other group
steps in a worker process that imports only the env's own modules (`sim2real.env_group`). The
learner waits for the envs anyway, so stepping a group itself costs it nothing, and it saves a
worker's round trip: on this 2-core machine a round trip to a worker cost ~1 ms on top of the
~6 ms its 8 driving envs take to step. The envs are seeded as SB3's ``make_vec_env`` seeds
them, so a run gives the same episodes as with a ``DummyVecEnv``.
"""

from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sim2real import env_group
from sim2real.errors import RunFailure
from sim2real.worker_processes import worker_context

WORKER_GONE = "an env worker process died without a word (interrupted, out of memory, or killed)"


class EnvWorkerError(RunFailure):
    """An env failed in a worker process or in this process's group: carries the env's traceback."""


class WorkerVecEnv(VecEnv):
    """`len(env_fns)` envs split into `workers` contiguous groups: the first steps here, each other in its own process.

    Worker processes start with "forkserver" (as SB3's SubprocVecEnv): safe beside torch's
    threads, and a worker forks from a server that has already imported the env modules, so it is
    ready in milliseconds. Env i is the i-th of `env_fns` whatever the number of workers; with
    one worker no process is started.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int | None = None) -> None:
        if not env_fns:
            raise ValueError("WorkerVecEnv needs at least one env factory")
        workers = min(len(env_fns), workers or os.cpu_count() or 1)
        bounds = np.linspace(0, len(env_fns), workers + 1).round().astype(int)
        self.slots = [list(range(bounds[w], bounds[w + 1])) for w in range(workers)]
        self.closed, self.waiting = False, False
        self.remotes, self.processes = [], []
        self.group: env_group.EnvGroup | None = None
        if workers > 1:  # with one, no process and no fork server
            context = worker_context(["__main__", "sim2real.env_group", "sim2real.factory", "sim2real.bullet"])
        for slots in self.slots[1:]:
            remote, work_remote = context.Pipe()
            factories = cloudpickle.dumps([env_fns[i] for i in slots])
            process = context.Process(target=env_group.serve, args=(work_remote, remote, factories), daemon=True)
            process.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(process)
        self.group = self._here(lambda: env_group.EnvGroup([env_fns[i] for i in self.slots[0]]))
        for remote in self.remotes:
            self._receive(remote)  # every worker reports, once built
        first = self.group.envs[0]
        super().__init__(len(env_fns), first.observation_space, first.action_space)

    def _here(self, work: Callable[[], Any]) -> Any:
        """Run `work` on this process's group; an env's failure stops the workers and is raised as theirs are."""
        try:
            return work()
        except Exception as exc:
            self._abandon()
            raise EnvWorkerError(f"an env failed in this process:\n{traceback.format_exc()}") from exc

    def _send(self, remote: Any, message: tuple[str, Any]) -> None:
        try:
            remote.send(message)
        except OSError as exc:
            self._abandon()
            raise EnvWorkerError(WORKER_GONE) from exc

    def _receive(self, remote: Any) -> Any:
        try:
            status, payload = remote.recv()
        except (EOFError, OSError) as exc:
            self._abandon()
            raise EnvWorkerError(WORKER_GONE) from exc
        if status == "error":
            self._abandon()
            raise EnvWorkerError(f"an env failed in a worker process:\n{payload}")
        return payload

    def step_async(self, actions: np.ndarray) -> None:
        for remote, slots in zip(self.remotes, self.slots[1:], strict=True):
            self._send(remote, ("step", actions[slots[0]:slots[-1] + 1]))
        self.actions = actions[:len(self.slots[0])]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        here = self._here(lambda: self.group.step(self.actions))
        results = [here, *(self._receive(remote) for remote in self.remotes)]
        self.waiting = False
        observations = [o for result in results for o in result[0]]
        infos = [i for result in results for i in result[3]]
        self.reset_infos = [i for result in results for i in result[4]]
        rewards = np.concatenate([result[1] for result in results])
        dones = np.concatenate([result[2] for result in results])
        return _stack(observations, self.observation_space), rewards, dones, infos

    def reset(self) -> VecEnvObs:
        def arguments(slots: list[int]) -> tuple[list[int | None], list[dict | None]]:
            return [self._seeds[i] for i in slots], [self._options[i] for i in slots]

        for remote, slots in zip(self.remotes, self.slots[1:], strict=True):
            self._send(remote, ("reset", arguments(slots)))
        here = self._here(lambda: self.group.reset(*arguments(self.slots[0])))
        results = [here, *(self._receive(remote) for remote in self.remotes)]
        observations = [o for result in results for o in result[0]]
        self.reset_infos = [i for result in results for i in result[1]]
        self._reset_seeds()
        self._reset_options()
        return _stack(observations, self.observation_space)

    def close(self) -> None:
        """Stop the workers and close every env; a worker already gone (a Ctrl-C reaches it too) is no error."""
        if self.closed:
            return
        for remote in self.remotes:
            try:
                if self.waiting:
                    remote.recv()
                remote.send(("close", None))
            except (EOFError, OSError):
                continue
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
        for remote in self.remotes:
            remote.close()
        if self.group is not None:
            self.group.close()
        self.closed = True

    def _abandon(self) -> None:
        """Stop every worker after an env failed, so none is left waiting for a message; close the envs here."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for remote in self.remotes:
            remote.close()
        if self.group is not None:
            self.group.close()
        self.closed = True

    def _ask(self, command: str, payload: Any, indices: VecEnvIndices) -> list[Any]:
        """Send `command` to the workers holding `indices` and return the answers in env order."""
        wanted = set(self._get_indices(indices))
        asked = []
        for remote, slots in zip(self.remotes, self.slots[1:], strict=True):
            mine = [i for i in slots if i in wanted]
            if mine:
                self._send(remote, (command, ([i - slots[0] for i in mine], payload)))
                asked.append(remote)
        here = [i for i in self.slots[0] if i in wanted]
        answers = self._here(lambda: env_group.answer(self.group, command, (here, payload))) if here else []
        return answers + [answer for remote in asked for answer in self._receive(remote)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` "
                          f"to obtain images.", stacklevel=2)
            return [None] * self.num_envs
        return self._ask("render", None, None)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._ask("has_attr", attr_name, None))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._ask("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._ask("set_attr", (attr_name, value), indices)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        return self._ask("env_method", (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._ask("is_wrapped", wrapper_class, indices)


def _stack(observations: list[Any], space: gym.Space) -> VecEnvObs:
    """Stack per-env observations the way SB3 does (dict and tuple spaces key by key)."""
    if isinstance(space, gym.spaces.Dict):
        return {key: np.stack([o[key] for o in observations]) for key in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(np.stack([o[i] for o in observations]) for i in range(len(space.spaces)))
    return np.stack(observations)
