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

    _add_tool_commands(sub)

    from connector.emulator.cli import add_arguments as add_emulator_arguments

    emu = sub.add_parser("emulator", help="serve a local stand-in for the Altcraft API, with fault injection")
    add_emulator_arguments(emu)
    reg = sub.add_parser("schema-registry", help="serve a small in-memory Confluent-compatible Schema Registry")
    reg.add_argument("--host", default="127.0.0.1")
    reg.add_argument("--port", type=int, default=8081)
    reg.add_argument("--register", action="append", default=[], metavar="SUBJECT=FILE.avsc",
                     help="register a schema at start (repeatable)")  # fmt: skip
    return parser


def _add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The operator commands: ``dlq inspect|replay`` and ``offsets show|reset`` (connector.tools)."""
    time_help = "ISO-8601 (UTC unless an offset is given) or a duration ago: 30m, 1h, 2d"
    dlq = sub.add_parser("dlq", help="inspect or replay the dead-letter topic")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    inspect = dlq_sub.add_parser("inspect", help="counts by stage and reason, and samples, of the dead letters")
    inspect.add_argument("--config", required=True, help="YAML settings file")
    inspect.add_argument("--since", metavar="TIME", help=f"from the first dead letter at or after TIME ({time_help})")
    inspect.add_argument("--stage", help="only this stage (decode, op, map, size, api)")
    inspect.add_argument(
        "--reason", metavar="TEXT", help="only reasons containing TEXT (class, message, API code/text)"
    )
    inspect.add_argument("--limit", type=int, default=10, metavar="N", help="samples to show (default 10)")

    replay = dlq_sub.add_parser("replay", help="send selected dead letters through their route again")
    replay.add_argument("--config", required=True, help="YAML settings file")
    replay.add_argument("--since", metavar="TIME", help=f"from the first dead letter at or after TIME ({time_help})")
    replay.add_argument("--stage", help="only this stage (decode, op, map, size, api)")
    replay.add_argument("--reason", metavar="TEXT", help="only reasons containing TEXT (class, message, API code/text)")
    how = replay.add_mutually_exclusive_group()
    how.add_argument("--dry-run", action="store_true", help="prepare and report, send nothing")
    how.add_argument("--dead-letter-again", action="store_true",
                     help="write what still fails to the dead-letter topic again")  # fmt: skip
    replay.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                        help="a progress line on stderr this often (default 10; 0: none)")  # fmt: skip

    offsets = sub.add_parser("offsets", help="show or reset the connector group's committed offsets")
    offsets_sub = offsets.add_subparsers(dest="offsets_command", required=True, metavar="ACTION")
    show = offsets_sub.add_parser("show", help="committed offset, end offset, lag and replay metadata per partition")
    show.add_argument("--config", required=True, help="YAML settings file")
    show.add_argument("--topic", metavar="T", help="only this topic (default: every topic of the routes)")
    reset = offsets_sub.add_parser("reset", help="move the committed offsets; clears the replay metadata")
    reset.add_argument("--config", required=True, help="YAML settings file")
    reset.add_argument("--to", required=True, metavar="WHERE",
                       help=f"earliest, latest, an offset, or a time ({time_help})")  # fmt: skip
    reset.add_argument("--topic", metavar="T", help="only this topic (default: every topic of the routes)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")


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
    from connector.compose import run_forever

    return run_forever(settings)


def _demo(args: argparse.Namespace) -> int:
    from connector.demo import run_demo

    return run_demo(events=args.events, seed=args.seed)


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _tool(args: argparse.Namespace) -> int:
    """``dlq inspect|replay`` and ``offsets show|reset``: arguments checked, settings loaded, errors to stderr."""
    import time

    from confluent_kafka import KafkaException

    from connector.logs import setup_logging
    from connector.tools import ToolError
    from connector.tools.letters import Selection
    from connector.tools.offsets import parse_target
    from connector.tools.timespec import parse_time

    now = time.time()
    try:
        since_ms = parse_time(args.since, now) if getattr(args, "since", None) else None
        target = parse_target(args.to, now) if getattr(args, "to", None) else None
        if getattr(args, "limit", 0) < 0:
            raise ValueError("--limit must be 0 or more")
    except ValueError as exc:
        print(f"altcraft-connector {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_SETTINGS
    setup_logging("WARNING", "text")
    try:
        if args.command == "dlq":
            selection = Selection(stage=args.stage, reason=args.reason)
            if args.dlq_command == "inspect":
                from connector.tools.dlq_inspect import run_inspect

                return run_inspect(settings, since_ms=since_ms, since_text=args.since, selection=selection,
                                   limit=args.limit, out=sys.stdout, err=sys.stderr)  # fmt: skip
            from connector.tools.dlq_replay import run_replay

            return run_replay(settings, since_ms=since_ms, selection=selection, dry_run=args.dry_run,
                              dead_letter_again=args.dead_letter_again, out=sys.stdout, err=sys.stderr,
                              progress_every_s=args.progress_every)  # fmt: skip
        from connector.tools.offsets import run_reset, run_show

        if args.offsets_command == "show":
            return run_show(settings, topic=args.topic, out=sys.stdout)
        assert target is not None  # --to is required by reset
        return run_reset(settings, target=target, topic=args.topic, yes=args.yes, out=sys.stdout, err=sys.stderr,
                         confirm=_confirm)  # fmt: skip
    except (ToolError, KafkaException) as exc:
        print(f"altcraft-connector {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command in ("dlq", "offsets"):
        return _tool(args)
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
