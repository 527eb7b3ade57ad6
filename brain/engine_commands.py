"""`brain engine-check` and `brain engine-bench`.

brain/cli.py registers these two click commands in the brain group; this
module also runs on its own: `python -m brain.engine_commands engine-check ...`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

import click

from engines import ENGINE_NAMES
from engines.conformance import CHECKS, EngineTarget, run_checks, select

# engines keeping their data in a local directory (which is then required)
_LOCAL_ENGINES = ("leveldb",)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """-o KEY=VALUE pairs; VALUE is JSON when it parses (numbers, booleans,
    null, lists), else a string. Dashes in KEY become underscores."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="-o/--option")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        options[key.replace("-", "_")] = value
    return options


def _engine_options(
    engine: str, data_dir: str | None, pairs: tuple[str, ...], tikv_pd_endpoints: str | None, tikv_key_prefix: str | None = None
) -> dict[str, Any]:
    if engine in _LOCAL_ENGINES and not data_dir:
        raise click.UsageError(f"--engine {engine} needs --data-dir")
    options = _parse_options(pairs)
    if tikv_pd_endpoints:
        if engine != "tikv":
            raise click.UsageError("--tikv-pd-endpoints only applies to --engine tikv")
        options["pd_endpoints"] = [e.strip() for e in tikv_pd_endpoints.split(",") if e.strip()]
    if tikv_key_prefix is not None:
        if engine != "tikv":
            raise click.UsageError("--tikv-key-prefix only applies to --engine tikv")
        options["key_prefix"] = tikv_key_prefix
    return options


_engine_option = click.option("--engine", type=click.Choice(ENGINE_NAMES), default="leveldb", show_default=True, help="Engine to test.")
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory to work in (a scratch subdirectory is made and removed; existing contents are not touched).",
)
_option_option = click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Engine option (repeatable), e.g. -o write_buffer_size=67108864.")
_pd_option = click.option("--tikv-pd-endpoints", default=None, help="Comma-separated TiKV PD endpoints (--engine tikv).")
_prefix_option = click.option(
    "--tikv-key-prefix",
    default=None,
    help="Key prefix the checks work under (--engine tikv; default brain/): each run uses a fresh <prefix>engine-check/<id>/ and removes it.",
)


@click.command("engine-check")
@_engine_option
@_data_dir_option
@_option_option
@_pd_option
@_prefix_option
@click.option("--check", "checks", multiple=True, metavar="NAME", help="Run only this check (repeatable); see --list.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@click.option("--keep", is_flag=True, help="Keep the scratch data of the checks.")
@click.pass_context
def engine_check(
    ctx: click.Context,
    engine: str,
    data_dir: str | None,
    options: tuple[str, ...],
    tikv_pd_endpoints: str | None,
    tikv_key_prefix: str | None,
    checks: tuple[str, ...],
    list_checks: bool,
    keep: bool,
) -> None:
    """Run the engine conformance suite; exit 0 only if every check passes."""
    if list_checks:
        for c in CHECKS:
            click.echo(f"{c.name:<20} {c.about}")
        return
    opts = _engine_options(engine, data_dir, options, tikv_pd_endpoints, tikv_key_prefix)
    try:
        selected = select(checks)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--check") from None
    if data_dir:
        os.makedirs(data_dir, exist_ok=True)
    if engine == "memory":
        click.echo("note: the memory engine is not durable; the durability checks are skipped")
        # one warning per opened engine would drown the report
        logging.getLogger("engines.memory").setLevel(logging.ERROR)
    if engine == "tikv":
        # each check under its own key prefix in the cluster (engines/tikv/checking.py)
        from engines.tikv.checking import run_tikv_checks

        summary = run_tikv_checks(opts, selected, emit=lambda line: click.echo(line), keep=keep)
        ctx.exit(0 if summary.ok else 1)
    target = EngineTarget(engine, opts, base_dir=data_dir if engine in _LOCAL_ENGINES else None)
    summary = run_checks(target, selected, emit=lambda line: click.echo(line), keep=keep)
    ctx.exit(0 if summary.ok else 1)


@click.command("engine-bench")
@_engine_option
@_data_dir_option
@_option_option
@_pd_option
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON to this file.")
@click.option("--seconds", type=click.FloatRange(min=0.01), default=0.5, show_default=True, help="Duration of each measurement.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Alternating engine/raw-plyvel rounds per batch size (the median is kept).")
@click.option("--value-size", type=click.IntRange(min=0), default=1024, show_default=True, help="Bytes per value.")
@click.option("--loop", "loop_name", type=click.Choice(["uvloop", "asyncio"]), default="uvloop", show_default=True, help="Event loop (brain serve uses uvloop).")
def engine_bench(
    engine: str,
    data_dir: str | None,
    options: tuple[str, ...],
    tikv_pd_endpoints: str | None,
    out: str | None,
    seconds: float,
    rounds: int,
    value_size: int,
    loop_name: str,
) -> None:
    """Micro-benchmark an engine against raw plyvel; print ops/s, save JSON."""
    from engines import open_engine
    from engines.bench import report, run_bench

    opts = _engine_options(engine, data_dir, options, tikv_pd_endpoints)
    if data_dir:
        os.makedirs(data_dir, exist_ok=True)
    # the raw plyvel baseline runs in the same directory (same filesystem) as the engine
    scratch = tempfile.mkdtemp(prefix=f"engine-bench-{engine}-", dir=data_dir)
    if engine == "memory":
        logging.getLogger("engines.memory").setLevel(logging.ERROR)

    async def go() -> Any:
        eng = open_engine(engine, data_dir=os.path.join(scratch, "engine"), **opts)
        try:
            return await run_bench(
                eng,
                os.path.join(scratch, "raw-plyvel"),
                seconds=seconds,
                rounds=rounds,
                value_size=value_size,
                progress=lambda s: click.echo(f"  ... {s}", err=True),
            )
        finally:
            await eng.close()

    loop_used = loop_name
    click.echo(f"engine-bench {engine}: data in {scratch}, values of {value_size} bytes, {seconds:g}s per measurement")
    try:
        if loop_name == "uvloop":
            try:
                import uvloop
            except ImportError:
                loop_used = "asyncio"
                result = asyncio.run(go())
            else:
                result = uvloop.run(go())
        else:
            result = asyncio.run(go())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for line in report(result):
        click.echo(line)
    if out:
        doc = result.to_dict() | {
            "engine_options": opts,
            "loop": loop_used,
            "data_dir": os.path.abspath(data_dir) if data_dir else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        }
        with open(out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        click.echo(f"results written to {out}")


@click.group()
def main() -> None:
    """Engine tools (also available as `brain engine-check` / `brain engine-bench`)."""


main.add_command(engine_check)
main.add_command(engine_bench)


if __name__ == "__main__":
    main()
