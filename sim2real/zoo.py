"""Policy bundles: an SB3 zip plus card.json (what it is, how it was trained, what it scored) and card.md.

A bundle directory holds ``model.zip`` — loadable with plain stable-baselines3 (``PPO.load``) —
next to its card. `load_policy` takes a zoo name, a bundle directory or a plain SB3 ``.zip``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from sim2real.errors import Sim2RealError, allowed
from sim2real.formatting import percent
from sim2real.paths import data_dir
from sim2real.records import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

ALGORITHMS = ("ppo", "sac")
"""The SB3 algorithms a bundle may hold (imported only when a model is loaded: listing cards stays fast)."""


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of `algo` ("ppo" or "sac")."""
    from stable_baselines3 import PPO, SAC

    if algo not in ALGORITHMS:
        raise BundleError(f"unknown algorithm {algo!r} (supported: {allowed(ALGORITHMS)})")
    return {"ppo": PPO, "sac": SAC}[algo]
MODEL_FILE = "model.zip"
CARD_FIELDS = ("task", "algo", "randomized", "train_steps", "seed", "source_success", "targets")


class BundleError(Sim2RealError):
    """A policy bundle is missing, corrupt, or does not fit the env it is used on."""


def policies_dir() -> Path:
    """Where the shipped bundles live: the source tree's policies/, or the copy inside the wheel."""
    return data_dir("policies")


def list_zoo() -> list[str]:
    """Names of the shipped bundles."""
    root = policies_dir()
    return sorted(p.name for p in root.iterdir() if (p / "card.json").is_file()) if root.is_dir() else []


def resolve(policy: str | Path) -> Path:
    """A zoo name, bundle directory or SB3 zip → the path it names (bundle dir or zip)."""
    path = Path(policy)
    if path.is_dir() or path.suffix == ".zip":
        if not path.exists():
            raise BundleError(f"no such policy file: {path}")
        if path.is_dir() and not (path / MODEL_FILE).is_file():
            raise BundleError(f"{path} is not a policy bundle: it has no {MODEL_FILE}")
        return path
    candidate = policies_dir() / str(policy)
    if candidate.is_dir():
        return candidate
    raise BundleError(f"unknown policy '{policy}' (zoo: {allowed(list_zoo())}; or a bundle directory or an SB3 .zip)")


def model_zip(path: Path) -> Path:
    """The SB3 zip of a resolved policy path: a bundle's model.zip, or the plain zip itself."""
    return path / MODEL_FILE if path.is_dir() else path


def model_sha256(data: bytes) -> str:
    """A short hash of a model zip's bytes: what run records and plans name a policy by."""
    return hashlib.sha256(data).hexdigest()[:16]


def policy_sha256(policy: str | Path) -> str:
    """The short hash of the model zip a zoo name, bundle directory or SB3 zip names."""
    path = resolve(policy)
    return model_sha256(model_zip(path).read_bytes())


def load_card(policy: str | Path) -> dict[str, Any]:
    """The card.json of a bundle (a plain zip has none: an empty dict)."""
    path = resolve(policy)
    if path.is_file():
        return {}
    card_path = path / "card.json"
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{path} has no card.json") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{card_path} is not valid JSON: {exc}") from exc
    missing = [name for name in CARD_FIELDS if name not in card]
    if missing:
        raise BundleError(f"{card_path} lacks the field(s) {allowed(missing)} (a card needs {allowed(CARD_FIELDS)})")
    return card


def detect_algo(zip_path: Path) -> str:
    """Which SB3 algorithm saved a zip, told by the hyperparameters its `data` entry lists (no unpickling)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise BundleError(f"{zip_path} is not a stable-baselines3 model zip: {exc}") from exc
    if {"clip_range", "n_epochs"} <= set(data):
        return "ppo"
    if {"tau", "target_entropy"} <= set(data):
        return "sac"
    raise BundleError(f"{zip_path}: cannot tell its algorithm (supported: {allowed(ALGORITHMS)})")


def policy_algorithm(policy: str | Path) -> str:
    """The algorithm ("ppo" or "sac") of a zoo name, bundle directory or plain zip, from its card or its zip's
    `data` entry: what a plan needs to know of a policy, without loading torch weights."""
    path = resolve(policy)
    card = load_card(path) if path.is_dir() else {}
    algo = card.get("algo") or detect_algo(model_zip(path))
    if algo not in ALGORITHMS:
        raise BundleError(f"{path}: unknown algorithm '{algo}' (supported: {allowed(ALGORITHMS)})")
    return algo


def load_policy(policy: str | Path, env: gym.Env | None = None, **kwargs: Any) -> BaseAlgorithm:
    """Load the SB3 model of a zoo name, bundle directory or plain zip; with `env`, check the spaces fit."""
    path = resolve(policy)
    zip_path = model_zip(path)
    algo = policy_algorithm(path)
    try:
        model = algorithm_class(algo).load(zip_path, device="cpu", **kwargs)
    except (zipfile.BadZipFile, ValueError, KeyError, RuntimeError, EOFError) as exc:
        raise BundleError(f"cannot load {zip_path} as an SB3 {algo.upper()} model: {exc}") from exc
    if env is not None:
        check_spaces(model, env, str(policy))
    return model


def _mismatched(model: BaseAlgorithm, env: gym.Env) -> list[tuple[str, gym.Space, gym.Space]]:
    """Each space ("observation_space", "action_space") whose shape or kind differs: (name, policy's, env's)."""
    pairs = ((kind, getattr(model, kind), getattr(env, kind)) for kind in ("observation_space", "action_space"))
    return [(kind, theirs, ours) for kind, theirs, ours in pairs
            if theirs.shape != ours.shape or type(theirs) is not type(ours)]


def space_changes(model: BaseAlgorithm, env: gym.Env) -> str | None:
    """How the env's observation and action shapes differ from the policy's (a changed task), or None if they fit."""
    changes = [f"{kind.removesuffix('_space')} {theirs.shape} → {ours.shape}"
               for kind, theirs, ours in _mismatched(model, env)]
    return ", ".join(changes) or None


def check_spaces(model: BaseAlgorithm, env: gym.Env, name: str = "the policy") -> None:
    """Raise a BundleError naming both sides when the policy's spaces differ from the env's."""
    mismatched = _mismatched(model, env)
    if mismatched:
        kind, theirs, ours = mismatched[0]
        raise BundleError(f"{name} expects {kind.replace('_', ' ')} {theirs}, but the env has {ours}")


def save_bundle(model: BaseAlgorithm, directory: Path, card: Mapping[str, Any]) -> Path:
    """Write model.zip, card.json and card.md into `directory` (each replaced atomically)."""
    save_model_atomic(model, directory / MODEL_FILE)
    write_json_atomic(directory / "card.json", dict(card))
    write_bytes_atomic(directory / "card.md", render_card(card).encode())
    return directory


def save_model_atomic(model: BaseAlgorithm, path: Path) -> Path:
    """Save an SB3 model to `path` so a reader never sees half a zip: saved beside it, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.tmp.zip")
    model.save(staging)
    os.replace(staging, path)
    return path


def render_card(card: Mapping[str, Any]) -> str:
    """A human-readable model card (without success columns for a task scored by return)."""
    by_return = card.get("metric") == "return"
    lines = [
        f"# {card.get('name', 'policy')}",
        "",
        f"{card['algo'].upper()} policy for the **{card['task']}** task, trained on `{card.get('target', 'source')}`"
        f" {'with domain randomization' if card['randomized'] else 'in the nominal domain'} for"
        f" {card['train_steps']:,} env steps (seed {card['seed']}, {card.get('wall_seconds', 0):.0f} s of training"
        f" with its evaluations).",
        "",
        f"| target | kind |{'' if by_return else ' success |'} mean return | episodes |",
        "|---|---|---|---|" if by_return else "|---|---|---|---|---|",
    ]
    for target, result in card["targets"].items():
        success = "" if by_return else f" {percent(result['success'])} |"
        lines.append(f"| {target} | {result.get('kind', '')} |{success} {result['return']:.2f} |"
                     f" {result.get('episodes', '')} |")
    lines += [
        "",
        f"{'Returns are' if by_return else 'Success is'} measured with the deterministic policy, randomization off,"
        f" episode i reset with seed"
        f" {card.get('eval_seed', 1_000_000):,} + i.",
        "",
        "```python",
        f"from stable_baselines3 import {card['algo'].upper()}",
        f"model = {card['algo'].upper()}.load('model.zip')",
        "```",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in card.get('versions', {}).items())}.",
        "",
    ]
    return "\n".join(lines)
