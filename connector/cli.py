"""Command line: argument parsing, logging set-up, exit codes. No pipeline logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson
import yaml

from connector import __version__
from connector.config import Settings, SettingsError, load_settings, masked_dump

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_SETTINGS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="altcraft-connector",
        description="Streams profile-change events from Kafka into Altcraft scenarios.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a settings file and print the effective settings")
    check.add_argument("--config", required=True, help="YAML settings file")
    check.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format")

    run = sub.add_parser("run", help="run the connector until SIGTERM or SIGINT")
    run.add_argument("--config", required=True, help="YAML settings file")

    demo = sub.add_parser("demo", help="run the whole pipeline on an embedded Kafka, emulator and data set")
    demo.add_argument("--events", type=int, default=50_000, help="change events to stream (default 50000)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated data (default 7)")

    from connector.emulator.cli import add_arguments as add_emulator_arguments

    emu = sub.add_parser("emulator", help="serve a local stand-in for the Altcraft API, with fault injection")
    add_emulator_arguments(emu)
    reg = sub.add_parser("schema-registry", help="serve a small in-memory Confluent-compatible Schema Registry")
    reg.add_argument("--host", default="127.0.0.1")
    reg.add_argument("--port", type=int, default=8081)
    reg.add_argument("--register", action="append", default=[], metavar="SUBJECT=FILE.avsc",
                     help="register a schema at start (repeatable)")  # fmt: skip
    return parser


def _load(path: str) -> Settings | None:
    """The settings, or None after listing every problem on stderr."""
    try:
        return load_settings(path)
    except SettingsError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_SETTINGS
    dumped = masked_dump(settings)
    if args.format == "json":
        print(orjson.dumps(dumped, option=orjson.OPT_INDENT_2).decode())
    else:
        print(yaml.safe_dump(dumped, sort_keys=False), end="")
    print(f"{args.config}: valid", file=sys.stderr)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_SETTINGS
    from connector.app import run_forever

    return run_forever(settings)


def _demo(args: argparse.Namespace) -> int:
    from connector.demo import run_demo

    return run_demo(events=args.events, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "schema-registry":
        from connector.schema_registry.__main__ import main as run_registry

        forwarded = ["--host", args.host, "--port", str(args.port)]
        for item in args.register:
            forwarded += ["--register", item]
        return run_registry(forwarded)
    if args.command == "emulator":
        from connector.emulator.cli import run as run_emulator

        return run_emulator(args)
    raise AssertionError(args.command)  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
