"""`sim2real serve` and `sim2real testbed`: serve a target as a testbed stand-in; the link's keys and certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sim2real.cli.common import (
    Task,
    app,
    console,
    testbed_app,
    user_errors,
)


@app.command()
@user_errors
def serve(
    task: Task,
    target: Annotated[str, typer.Option(help="domain the stand-in simulates ('real': the physical stand-in)")] = "real",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 0-65535 (0: any free port, printed)")] = 5555,
    hold_after: Annotated[float, typer.Option(help="seconds of client silence before the safe hold")] = 0.5,
    key_file: Annotated[Path | None, typer.Option(
        envvar="SIM2REAL_TESTBED_KEY_FILE", help="shared key file: only clients holding it may drive the env")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve tls:// (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="serve a non-loopback host WITHOUT a key: anyone who reaches it can drive the env")] = False,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="step at the env's control period (grasping 24 Hz, driving 25 Hz) as a robot")] = False,
    applied_log: Annotated[Path | None, typer.Option(
        help="JSONL log of every applied step; a server restarted on it resumes episode numbering and answers "
             "the resend of the last step")] = None,
) -> None:
    """Serve a task's target as a testbed stand-in (the same protocol a real robot's server speaks)."""
    import functools
    import logging

    from sim2real import catalog
    from sim2real.factory import make_env
    from sim2real.testbed.admission import server_security
    from sim2real.testbed.server import TestbedServer

    spec = catalog.load(task)
    spec.target(target)
    key, tls = server_security(key_file, tls_cert, tls_key)
    server = TestbedServer(functools.partial(make_env, spec, target), host, port, hold_after, key=key, tls=tls,
                           insecure=insecure, realtime=realtime, applied_log=applied_log)
    guard = "key required" if key else "[bold red]NO KEY[/]: anyone who reaches the port can drive it"
    pace = ", in real time" if realtime else ""
    console.print(f"Serving [bold]{spec.name}:{target}[/] on {'tls' if tls else 'tcp'}://{host}:{port}{pace}, {guard} "
                  f"(Ctrl-C to stop)")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")  # refusals, with the peer, on stderr
    logging.getLogger("sim2real.testbed").setLevel(logging.INFO)
    server.serve_forever(on_ready=lambda bound: console.print(f"LISTENING {bound}"))


@testbed_app.command("keygen")
@user_errors
def testbed_keygen(
    path: Annotated[Path, typer.Argument(help="key file to write (owner-only permissions)")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing key file")] = False,
) -> None:
    """Write a fresh random shared key; give the same file to `serve --key-file` and to every client."""
    from sim2real.testbed.auth import generate_key_file

    generate_key_file(path, overwrite=force)
    console.print(f"Key written to {path} (mode 600). Copy it to the robot's server and to each client over a "
                  f"trusted channel; never commit it.")


@testbed_app.command("selfsign")
@user_errors
def testbed_selfsign(
    cert: Annotated[Path, typer.Argument(help="certificate file to write (PEM)")],
    key: Annotated[Path, typer.Argument(help="its private key file to write (PEM, mode 600)")],
    host: Annotated[list[str], typer.Option(help="a name or IP address clients connect to (repeat for more)")],
    days: Annotated[int, typer.Option(help="days the certificate is valid")] = 365,
) -> None:
    """Make a self-signed certificate for `serve --tls-cert/--tls-key`; clients pin the fingerprint it prints."""
    from sim2real.testbed.tls import self_signed_certificate

    fingerprint = self_signed_certificate(cert, key, host, days)
    console.print(f"Certificate {cert}, key {key}. Clients connect with tls://{host[0]}:PORT and "
                  f"--tls-fingerprint {fingerprint}", highlight=False, soft_wrap=True)


@testbed_app.command("fingerprint")
@user_errors
def testbed_fingerprint(cert: Annotated[Path, typer.Argument(help="the server's PEM certificate")]) -> None:
    """Print a certificate's SHA-256 fingerprint, for clients to pin with --tls-fingerprint."""
    from sim2real.testbed.tls import certificate_fingerprint

    console.print(certificate_fingerprint(cert), highlight=False, soft_wrap=True)
