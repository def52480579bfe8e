"""`gyre consumers key`: make an API key and the config lines that declare its consumer."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from gyre.cli._app import console

consumers_app = typer.Typer(help="Declared consumers of the server.", no_args_is_help=True)


@consumers_app.command()
def key(
    name: Annotated[str, typer.Argument(help="Consumer name, e.g. checkout-service.")],
    models: Annotated[str, typer.Option(help="Models it may call, comma-separated.")] = "*",
    rate: Annotated[float | None, typer.Option(help="Requests per second, all processes.")] = None,
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--events",
            metavar="TYPE",
            help="Event types it may ingest (POST /v1/events/TYPE), comma-separated or "
            "repeated; * for every type. Default: none.",
        ),
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            help="May move and delete aliases and set traffic policies on the control plane "
            "(gyre control), and read shadow comparisons, for the models it may call."
        ),
    ] = False,
) -> None:
    """Print a new API key (shown once) and the gyre.toml lines that declare it (hashed)."""
    from gyre.auth import hash_key, new_key

    secret = new_key()
    # TOML as written by hand where it can be, quoted where the name needs it.
    table = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    listed = ", ".join(json.dumps(m.strip()) for m in models.split(","))
    lines = [
        f"[serve.consumers.{table}]",
        f'key_sha256 = "{hash_key(secret)}"',
        f"models = [{listed}]",
    ]
    if rate is not None:
        lines.append(f"rate_per_s = {rate}")
    types = [t.strip() for value in events or [] for t in value.split(",") if t.strip()]
    if types:
        lines.append(f"events = [{', '.join(json.dumps(t) for t in types)}]")
    if admin:
        lines.append("admin = true")
    console.print(f"API key for {name} (store it now; gyre keeps only its hash):", markup=False)
    console.print(secret, markup=False, highlight=False)
    console.print("\nAdd to gyre.toml:")
    console.print("\n".join(lines), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `gyre consumers …` to `app`."""
    app.add_typer(consumers_app, name="consumers")
