"""Run folders: each command that writes one records what it ran there, so a rerun resumes only that same run.

`claim_folder` is the one rule every such command follows (``evaluate``, ``adapt``, ``train``;
``transfer`` keeps its plan.json by the same rule): an empty or new folder gets ``run.json``; a
folder holding the same run is resumed; a folder holding another run is refused with the first
difference named, unless the user says ``force``, which removes the earlier run's outputs first.
Nothing already computed is overwritten without being told to.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sim2real.errors import Sim2RealError
from sim2real.records import write_json_atomic

RUN_FILE = "run.json"
HEADER_KEY = "run"
"""The key of a JSONL file's first line when it records the run that wrote the file (rollout files)."""
IDENTIFIED_BY = {"policy": "policy_sha256", "task": "task_hash"}
"""Settings that name a thing, and the setting holding its hash: the same content under another name is the same run."""


class RunFolderError(Sim2RealError):
    """An output folder or file cannot take this run: it holds another one, or is not a folder."""


def package_version() -> str:
    """The installed sim2real version (recorded with every run)."""
    try:
        return metadata.version("sim2real")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunRecord:
    """What a command ran: its name, every setting that shapes its outputs (in order), and the package version."""

    command: str
    settings: Mapping[str, Any]
    version: str = field(default_factory=package_version)

    def to_json(self) -> dict[str, Any]:
        """The run.json content."""
        return {"command": self.command, "settings": dict(self.settings), "version": self.version}

    @classmethod
    def from_json(cls, data: Any, where: str) -> RunRecord:
        """Read back run.json content; an error naming `where` if it is not one."""
        if not isinstance(data, Mapping) or not isinstance(data.get("settings"), Mapping) or "command" not in data:
            raise RunFolderError(f"{where} is not a sim2real run record (expected command, settings, version)")
        return cls(str(data["command"]), dict(data["settings"]), str(data.get("version", "unknown")))

    def first_difference(self, other: RunRecord) -> str | None:
        """The first way `other` (the run on disk) differs from this one, in words; None if they are the same run."""
        if other.command != self.command:
            return f"it holds a `{other.command}` run, this is `{self.command}`"
        for key in [*self.settings, *(k for k in other.settings if k not in self.settings)]:
            there, here = other.settings.get(key), _plain(self.settings.get(key))
            same_content = key in IDENTIFIED_BY and other.settings.get(IDENTIFIED_BY[key]) == _plain(
                self.settings.get(IDENTIFIED_BY[key]))
            if there != here and not same_content:
                return _first_leaf_difference(key, there, here)
        if other.version != self.version:
            return f"it was made by sim2real {other.version}, this is {self.version}"
        return None


def _first_leaf_difference(name: str, there: Any, here: Any) -> str:
    """Where two differing settings first differ, down to the entry inside a mapping or a list of equal length
    (``far_targets[0].retraining.budget is 8000 there, 4000 here``), not the whole of both."""
    if isinstance(there, Mapping) and isinstance(here, Mapping):
        for key in [*here, *(k for k in there if k not in here)]:
            if there.get(key) != here.get(key):
                return _first_leaf_difference(f"{name}.{key}", there.get(key), here.get(key))
    if isinstance(there, list) and isinstance(here, list) and len(there) == len(here):
        for index, (old, new) in enumerate(zip(there, here, strict=True)):
            if old != new:
                return _first_leaf_difference(f"{name}[{index}]", old, new)
    return f"{name} is {there!r} there, {here!r} here"


def _plain(value: Any) -> Any:
    """A setting as JSON reads it back (tuples as lists), so a value compares equal to its stored self."""
    return json.loads(json.dumps(value))


def read_run(path: Path) -> RunRecord | None:
    """The run recorded in `path` (a run.json), or None if there is none; an error if it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); remove it or choose another --out") from None
    return RunRecord.from_json(data, str(path))


def claim_file(path: Path, run: RunRecord, *, force: bool = False) -> bool:
    """Make the JSONL file at `path` this run's: its first line records the run; True when it resumes that run.

    A new file gets the header line; a file whose header is this run is resumed (appended to); a
    file of another run, or without a header, is refused unless `force`, which removes it first
    (a header alone, from a run that failed before its first episode, is simply replaced).
    """
    if path.is_dir():
        raise RunFolderError(f"{path} is a folder; give a file name (new, or a file this same command wrote)")
    if path.exists() and path.stat().st_size:
        previous = read_header(path)
        difference = "it has no run record" if previous is None else run.first_difference(previous)
        if difference is None:
            return True
        holds_work = previous is None or len(path.read_bytes().splitlines()) > 1
        if holds_work and not force:
            raise RunFolderError(f"{path} holds another recording ({difference}); rerun with the same options to "
                                 f"resume it, add --force to replace it, or choose another file")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write((json.dumps({HEADER_KEY: run.to_json()}, separators=(",", ":")) + "\n").encode())
    return False


def read_header(path: Path) -> RunRecord | None:
    """The run a JSONL file's first line records, or None when that line is not a run header."""
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        data = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return RunRecord.from_json(data[HEADER_KEY], str(path)) if isinstance(data, dict) and HEADER_KEY in data else None


def claim_folder(out: Path, run: RunRecord, outputs: Sequence[str], *, force: bool = False) -> bool:
    """Make `out` this run's folder; True when it resumes the same run already there.

    `outputs` are the names the command writes in `out`: a folder holding any of them without a
    run.json (an older version's, or a hand-made one) is refused too, since nobody can tell what
    made them. With `force`, another run's outputs (and its run.json) are removed first.
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; give a folder (new, or one this same command wrote)")
    record = out / RUN_FILE
    previous = read_run(record)
    present = [name for name in outputs if (out / name).exists()]
    if previous is not None:
        difference = run.first_difference(previous)
        if difference is None:
            return True
        if present and not force:  # a run that wrote nothing yet (it failed first) is simply replaced
            raise RunFolderError(f"{out} holds another run ({difference}); rerun with the same options to resume "
                                 f"it, add --force to replace it, or choose another --out")
    elif present and not force:
        raise RunFolderError(f"{out} holds {', '.join(present)} of an unrecorded run; add --force to replace "
                             f"them, or choose another --out")
    for name in present:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, run.to_json())
    return False
