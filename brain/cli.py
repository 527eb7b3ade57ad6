"""The brain command: serve, and the client tools."""
from __future__ import annotations

import importlib
import sys

import click

from brain.logs import fatal, setup_logging
from brain.serve_command import print_version, known_flags, serve
from brain.server.etcd_flags import go_style_argv


class _Commands(click.Group):
    """The client tools (bench, engine-check, engine-bench) are imported
    only when called, so `brain serve` starts without loading them."""

    LAZY = {
        "bench": ("bench.command", "bench"),
        "check": ("brain.check", "check"),
        "engine-check": ("brain.engine_commands", "engine_check"),
        "engine-bench": ("brain.engine_commands", "engine_bench"),
        "snapshot": ("brain.snapshot.command", "snapshot"),
        "migrate": ("brain.migrate.command", "migrate"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module, attr = self.LAZY[cmd_name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version, help="Print the version and exit.")
def cli() -> None:
    """brain: an etcd v3 API server for Kubernetes over pluggable engines."""


cli.add_command(serve)


def main() -> None:
    # Go's flag package takes -flag as well as --flag: so does serve
    args = sys.argv[1:]
    if args and args[0] == "serve":
        args = ["serve", *go_style_argv(args[1:], known_flags())]
    try:
        code = cli.main(args=args, prog_name="brain", standalone_mode=False)
    except click.UsageError as e:
        # a bad flag: one line (and, from serve, one log line), as etcd's start errors
        if e.ctx is not None and e.ctx.command.name == "serve":
            setup_logging("info")
            fatal(f"bad flag: {e.format_message()}", 2)
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
