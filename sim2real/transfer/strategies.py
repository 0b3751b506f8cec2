"""Transfer strategies: small declarative records of how to adapt a pretrained policy to a target.

A strategy only says *what* to do; :func:`sim2real.transfer.adapt` does it. Each one has a
``name``, a one-line :meth:`~Strategy.describe` and a JSON-ready :meth:`~Strategy.to_dict` for
the results, and class-level flags that :func:`adapt` reads: ``trains`` (False: evaluate only),
``transfers`` (False: start from fresh weights), ``freezes_base``, ``reinits_heads`` and
``transductive`` (True: the training happens in a simulator fitted to recorded target episodes,
see :mod:`sim2real.transductive`; :func:`adapt` prepares the model as :meth:`~SysidFinetune.inner` says).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from sim2real import defaults
from sim2real.errors import allowed
from sim2real.transfer.errors import TransferError

DEFAULT_LR_SCALE = 1.0
DEFAULT_L2SP_ALPHA = 0.1
DEFAULT_SYSID_HORIZON = defaults.SYSID_HORIZON
DEFAULT_RECORD_EPISODES = defaults.RECORD_EPISODES
DEFAULT_SYSID_BUDGET = defaults.SYSID_BUDGET
DEFAULT_SIM_STEPS = defaults.SIM_STEPS
DEFAULT_ROUNDS = defaults.ROUNDS
MAX_RECORDED_PER_SEED = 10_000
DEFAULT_RESIDUAL_SCALE = 1.0
DEFAULT_RESIDUAL_LOG_STD = -1.0
DEFAULT_CRITIC_WARMUP = 1_000
DEFAULT_RESIDUAL_UTD = 2
DEFAULT_RESIDUAL_ANCHOR = 0.0


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Base of every strategy: a name, what it does to the pretrained model, and its options."""

    name: ClassVar[str]
    trains: ClassVar[bool] = True
    transfers: ClassVar[bool] = True
    freezes_base: ClassVar[bool] = False
    reinits_heads: ClassVar[bool] = False
    transductive: ClassVar[bool] = False

    def describe(self) -> str:
        """One line saying what the strategy does, for logs and reports."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The name and every option, JSON-ready, to record alongside results."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}


@dataclass(frozen=True, kw_only=True)
class ZeroShot(Strategy):
    """Evaluate the pretrained policy on the target as it is: no training."""

    name: ClassVar[str] = "zero_shot"
    trains: ClassVar[bool] = False

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return "evaluate the pretrained policy on the target without training"


@dataclass(frozen=True, kw_only=True)
class Scratch(Strategy):
    """Train a fresh model with the pretrained model's hyperparameters: the baseline of every gain."""

    name: ClassVar[str] = "scratch"
    transfers: ClassVar[bool] = False

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return "train a fresh model with the pretrained model's hyperparameters (the baseline)"


@dataclass(frozen=True, kw_only=True)
class Training(Strategy):
    """Options shared by the strategies that train from the pretrained weights.

    ``lr_scale`` multiplies the pretrained learning rate (or schedule). ``learning_starts``
    (SAC only) replaces the pretrained value; None means min(500, pretrained value), since the
    replay buffer starts empty and those steps take uniform random actions. ``reset_entropy``
    (SAC with a learned coefficient only) restarts the entropy coefficient at its initial value
    instead of carrying the pretrained one over.
    """

    lr_scale: float = DEFAULT_LR_SCALE
    learning_starts: int | None = None
    reset_entropy: bool = False
    utd: int | None = None
    source_steps: int = 0

    def __post_init__(self) -> None:
        """Reject values no training run could use."""
        if not _finite_number(self.lr_scale) or self.lr_scale <= 0:
            raise TransferError(f"{self.name}: lr_scale must be a finite number > 0, got {self.lr_scale!r}")
        starts = self.learning_starts
        if starts is not None and (isinstance(starts, bool) or not isinstance(starts, int) or starts < 0):
            raise TransferError(f"{self.name}: learning_starts must be an integer >= 0 or None, got {starts!r}")
        utd = self.utd
        if utd is not None and (isinstance(utd, bool) or not isinstance(utd, int) or utd < 1):
            raise TransferError(f"{self.name}: utd (gradient steps per target step, SAC) must be an integer >= 1 "
                                f"or None for the pretrained model's, got {utd!r}")
        source = self.source_steps
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise TransferError(f"{self.name}: source_steps (source-domain transitions in the replay buffer, SAC) "
                                f"must be an integer >= 0, got {source!r}")

    def _training_note(self) -> str:
        """The learning-rate and SAC options, as a suffix of describe()."""
        notes = [f"learning rate ×{self.lr_scale:g}"]
        if self.learning_starts is not None:
            notes.append(f"learning_starts {self.learning_starts}")
        if self.reset_entropy:
            notes.append("entropy coefficient reset")
        if self.utd is not None:
            notes.append(f"{self.utd} gradient step(s) per target step")
        if self.source_steps:
            notes.append(f"replay buffer warm-started with {self.source_steps} source-domain steps")
        return ", ".join(notes)


@dataclass(frozen=True, kw_only=True)
class FineTune(Training):
    """Train every weight, starting from the pretrained ones."""

    name: ClassVar[str] = "finetune"

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return f"train every weight from the pretrained ones, {self._training_note()}"


@dataclass(frozen=True, kw_only=True)
class Freezing(Training):
    """Options of the strategies that freeze a base: ``prefixes`` names its modules (None: the default base).

    The default base is every hidden layer but the last, in the policy net and in the value
    net / critics; a prefix selects every layer whose module name equals it or starts with it
    followed by a dot.
    """

    prefixes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Normalise prefixes to a tuple of non-empty names and check the training options."""
        super().__post_init__()
        prefixes = self.prefixes
        if prefixes is None:
            return
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        prefixes = tuple(prefixes)
        if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
            raise TransferError(
                f"{self.name}: prefixes must be a non-empty list of module names (or None for the default "
                f"base), got {self.prefixes!r}"
            )
        object.__setattr__(self, "prefixes", prefixes)

    def _base_note(self) -> str:
        """What is frozen, in words."""
        if self.prefixes is None:
            return "every hidden layer but the last (policy and value/critic nets)"
        return "the modules " + ", ".join(self.prefixes)


@dataclass(frozen=True, kw_only=True)
class FreezeBase(Freezing):
    """Feature extraction: freeze the base layers, train the rest from the pretrained weights."""

    name: ClassVar[str] = "freeze_base"
    freezes_base: ClassVar[bool] = True

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return f"freeze {self._base_note()}, train the rest, {self._training_note()}"


@dataclass(frozen=True, kw_only=True)
class ReinitHead(Freezing):
    """Freeze the base, re-initialise the output heads and the action log-std, train the rest."""

    name: ClassVar[str] = "reinit_head"
    freezes_base: ClassVar[bool] = True
    reinits_heads: ClassVar[bool] = True

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return (
            f"freeze {self._base_note()}, re-initialise the output heads and the action log-std, "
            f"train the rest, {self._training_note()}"
        )


@dataclass(frozen=True, kw_only=True)
class L2SP(Training):
    """Train every weight with the penalty alpha·‖θ − θ₀‖² pulling it toward the pretrained θ₀ (L2-SP)."""

    name: ClassVar[str] = "l2sp"
    alpha: float = DEFAULT_L2SP_ALPHA

    def __post_init__(self) -> None:
        """Reject a negative or non-finite penalty weight and check the training options."""
        super().__post_init__()
        if not _finite_number(self.alpha) or self.alpha < 0:
            raise TransferError(f"{self.name}: alpha must be a finite number >= 0, got {self.alpha!r}")

    def describe(self) -> str:
        """One line saying what the strategy does."""
        return (
            f"train every weight with the penalty {self.alpha:g}·‖θ − θ₀‖² toward the pretrained weights, "
            f"{self._training_note()}"
        )


@dataclass(frozen=True, kw_only=True)
class SysidFinetune(Training):
    """Transductive transfer: record target episodes (no reward), fit the simulator to them, fine-tune there.

    Each of ``rounds`` rounds records ``episodes`` target episodes with the current policy (the
    pretrained one first), fits ``params`` (None: every numeric domain parameter of the task) to
    every episode recorded so far with ``sysid_budget`` discrepancy evaluations over the first
    ``horizon`` steps of each, and fine-tunes every weight of the current policy ``sim_steps``
    steps in the fitted simulator (randomized around the fit when ``randomize`` is on). A later
    round records where the adapted policy now drives or reaches, which the first recordings may
    not have shown (SimOpt's iteration). The recorded steps are all the target steps it costs.
    """

    name: ClassVar[str] = "sysid_finetune"
    transductive: ClassVar[bool] = True
    episodes: int = DEFAULT_RECORD_EPISODES
    params: tuple[str, ...] | None = None
    sysid_budget: int = DEFAULT_SYSID_BUDGET
    horizon: int = DEFAULT_SYSID_HORIZON
    sim_steps: int = DEFAULT_SIM_STEPS
    randomize: bool = True
    rounds: int = DEFAULT_ROUNDS

    def __post_init__(self) -> None:
        """Reject counts no run could use and normalise params to a tuple of names."""
        super().__post_init__()
        for option, least in (("episodes", 1), ("sysid_budget", 10), ("horizon", 1), ("sim_steps", 1),
                              ("rounds", 1)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise TransferError(f"{self.name}: {option} must be an integer >= {least}, got {value!r}")
        if self.episodes * self.rounds > MAX_RECORDED_PER_SEED:
            raise TransferError(f"{self.name}: episodes × rounds must be at most {MAX_RECORDED_PER_SEED}, got "
                                f"{self.episodes} × {self.rounds}")
        if not isinstance(self.randomize, bool):
            raise TransferError(f"{self.name}: randomize must be true or false, got {self.randomize!r}")
        params = self.params
        if params is None:
            return
        params = (params,) if isinstance(params, str) else tuple(params)
        if not params or not all(isinstance(p, str) and p for p in params):
            raise TransferError(f"{self.name}: params must be a non-empty list of domain parameter names "
                                f"(or None for every numeric one), got {self.params!r}")
        object.__setattr__(self, "params", params)

    def inner(self) -> FineTune:
        """The strategy that prepares the pretrained model for training in the fitted simulator."""
        return FineTune(lr_scale=self.lr_scale, learning_starts=self.learning_starts,
                        reset_entropy=self.reset_entropy, utd=self.utd, source_steps=self.source_steps)

    def describe(self) -> str:
        """One line saying what the strategy does."""
        fitted = "every numeric domain parameter" if self.params is None else ", ".join(self.params)
        around = " with randomization around the fit" if self.randomize else ""
        return (
            f"{self.rounds} round(s) of: record {self.episodes} target episodes (no reward), fit {fitted} to "
            f"every recording ({self.sysid_budget} evaluations), fine-tune every weight {self.sim_steps} steps in "
            f"the fitted simulator{around}; {self._training_note()}"
        )


@dataclass(frozen=True, kw_only=True)
class Residual(Training):
    """Freeze the whole pretrained policy and learn, with SAC, a zero-initialised correction of its action.

    The action is clip(pretrained(s) + ``scale`` · c(s, pretrained(s)), bounds): ``scale`` is the
    largest correction as a fraction of the action's half-range, ``log_std`` the correction's
    initial log standard deviation (before the tanh; its exploration around the pretrained
    action), ``critic_warmup`` the target steps during which only the critic learns, ``anchor`` the
    weight of a behaviour-cloning pull of the action toward the pretrained one (relative to the
    batch's mean |Q|, as in TD3+BC: 0.4 is their α = 2.5; 0 leaves it out). A SAC
    policy's critic and entropy coefficient carry over; a PPO policy (no Q-function) gets a
    fresh critic and the task's SAC hyperparameters for the correction. The learner acts with
    its policy from the first step: ``learning_starts`` only delays the first update.
    """

    name: ClassVar[str] = "residual"
    transfers: ClassVar[bool] = True
    freezes_base: ClassVar[bool] = True
    scale: float = DEFAULT_RESIDUAL_SCALE
    log_std: float = DEFAULT_RESIDUAL_LOG_STD
    critic_warmup: int = DEFAULT_CRITIC_WARMUP
    anchor: float = DEFAULT_RESIDUAL_ANCHOR
    utd: int | None = DEFAULT_RESIDUAL_UTD

    def __post_init__(self) -> None:
        """Reject a correction scale, exploration level or warm-up no run could use."""
        super().__post_init__()
        if not _finite_number(self.scale) or not 0 < self.scale <= 2:
            raise TransferError(f"{self.name}: scale must be a number in (0, 2] (a fraction of the action's "
                                f"half-range), got {self.scale!r}")
        if not _finite_number(self.log_std) or not -5 <= self.log_std <= 2:
            raise TransferError(f"{self.name}: log_std must be a number in [-5, 2], got {self.log_std!r}")
        warmup = self.critic_warmup
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise TransferError(f"{self.name}: critic_warmup must be an integer >= 0 (target steps), got {warmup!r}")
        if not _finite_number(self.anchor) or self.anchor < 0:
            raise TransferError(f"{self.name}: anchor must be a finite number >= 0 (the behaviour-cloning weight "
                                f"relative to mean |Q|; 0 for none), got {self.anchor!r}")

    def describe(self) -> str:
        """One line saying what the strategy does."""
        warmup = f", the critic alone for the first {self.critic_warmup} steps" if self.critic_warmup else ""
        anchor = (f", anchored to the pretrained action (behaviour cloning, {self.anchor:g}·mean|Q|)"
                  if self.anchor else "")
        return (
            f"freeze the pretrained policy and learn with SAC a zero-initialised correction of its action (up to "
            f"±{self.scale:g} of the half-range, initial log-std {self.log_std:g}){warmup}{anchor}, "
            f"{self._training_note()}"
        )


STRATEGIES: Mapping[str, type[Strategy]] = {
    cls.name: cls for cls in (ZeroShot, Scratch, FineTune, FreezeBase, ReinitHead, L2SP, Residual, SysidFinetune)
}


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy called ``name`` with ``options``, naming the known ones on a mistake."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise TransferError(f"unknown transfer strategy {name!r}; known strategies: {allowed(STRATEGIES)}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TransferError(f"strategy {name!r} has no option {', '.join(unknown)}; its options: {allowed(known)}")
    return cls(**options)


def parse_strategy(text: str) -> Strategy:
    """A strategy from the command line's ``name`` or ``name:option=value:option=value`` (values read as YAML).

    ``residual:utd=4:critic_warmup=2000`` is ``get_strategy("residual", utd=4, critic_warmup=2000)``;
    a list option takes its items joined by ``+`` (``freeze_base:prefixes=actor.latent_pi+critic``).
    """
    name, *pairs = text.strip().split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise TransferError(f"strategy option {pair!r} in {text!r} is not option=value; write "
                                "name:option=value:option=value, e.g. residual:utd=4:critic_warmup=2000")
        key = key.strip()
        if key in options:
            raise TransferError(f"strategy option {key!r} given twice in {text!r}")
        raw = raw.strip()
        options[key] = raw.split("+") if "+" in raw else _scalar(raw)
    return get_strategy(name.strip(), **options)


def _scalar(raw: str) -> Any:
    """A command-line option value as YAML reads it (4 → int, 0.5 → float, true → bool, null → None)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
