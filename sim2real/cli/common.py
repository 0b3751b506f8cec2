"""What the `sim2real` commands share: the apps, the consoles, errors as one line (exit 2 or 1), the options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sim2real.catalog import available
from sim2real.errors import RunFailure, Sim2RealError

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials

def _flag_type_hidden(display: Callable[..., str | None]) -> Callable[..., str | None]:
    """Typer 0.29 shows `<bool>` beside on/off flags (even --help), as if they took a value; show nothing."""

    @functools.wraps(display)
    def shown(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else display(self, ctx)

    return shown


typer.core.TyperOption.display_type_rich = _flag_type_hidden(typer.core.TyperOption.display_type_rich)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pretrain in PyBullet, transfer to shifted targets, measure the gain.")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped pretrained policies.")
app.add_typer(zoo_app, name="zoo")
testbed_app = typer.Typer(no_args_is_help=True, help="Keys and certificates of the robot testbed link.")
app.add_typer(testbed_app, name="testbed")
console = Console(width=None if sys.stdout.isatty() else 120, emoji=False)  # logs and pipes get full tables
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from sim2real.rundir import package_version

        console.print(f"sim2real {package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Pretrain in PyBullet, transfer to shifted targets, measure the gain."""


def user_errors(function: F) -> F:
    """One line on stderr, no traceback: exit code 1 for a RunFailure (rerun to resume), 2 for bad input."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except RunFailure as exc:
            err.print(f"[bold red]failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except (Sim2RealError, FileNotFoundError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


Task = Annotated[str, typer.Argument(help=f"catalogue name ({', '.join(available())}) or a path to a task YAML")]
TaskOption = Annotated[str, typer.Option(help="catalogue name or task YAML")]
Policy = Annotated[str, typer.Argument(help="zoo name, bundle directory or SB3 .zip")]
Seed = Annotated[int, typer.Option(help="seed of the first episode (episode i uses seed+i)")]
FitParams = Annotated[str | None, typer.Option(help="comma-separated parameters to fit (default: all numeric)")]
FitHorizon = Annotated[int, typer.Option(help="control steps of each episode compared")]
Testbed = Annotated[str | None, typer.Option(help="tcp://HOST:PORT or tls://HOST:PORT of a testbed server")]
KeyFile = Annotated[Path | None, typer.Option(
    envvar="SIM2REAL_TESTBED_KEY_FILE", help="the testbed's shared key file (sim2real testbed keygen)")]
TlsCa = Annotated[Path | None, typer.Option(
    envvar="SIM2REAL_TESTBED_CA", help="tls://: CA file that signed the testbed's certificate")]
TlsFingerprint = Annotated[str | None, typer.Option(
    envvar="SIM2REAL_TESTBED_FINGERPRINT", help="tls://: the testbed certificate's pinned SHA-256 fingerprint")]


def testbed_credentials(key_file: Path | None, tls_ca: Path | None, tls_fingerprint: str | None) -> Credentials:
    """The client's Credentials from the testbed options (read before anything else runs)."""
    from sim2real.testbed.credentials import Credentials

    return Credentials.load(key_file, tls_ca, tls_fingerprint)


def show_fit_progress() -> None:
    """Print the CMA-ES fit's progress (the library logs a line per generation) on the console."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("sim2real.sysid")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False, show_level=False))
        logger.setLevel(logging.INFO)


def split_names(text: str | None, option: str = "--params") -> tuple[str, ...] | None:
    """A comma-separated list as a tuple of names; None when the option was not given, an error when it is empty."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise Sim2RealError(f"{option} {text!r} names nothing; give comma-separated names, or leave the option out "
                            f"for the default")
    return names
