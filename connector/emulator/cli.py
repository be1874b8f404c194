"""Placeholder: the emulator's command line."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8088)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
