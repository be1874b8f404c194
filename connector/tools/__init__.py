"""Operator commands: read the dead-letter topic, replay dead letters, show and reset the group's offsets.

One module per command, each written the same way: pure functions first (parse a time, select
letters, plan groups and offsets, summarise), then one ``run_*`` function at the end doing the Kafka
and HTTP I/O and writing its report to the streams it is given. :mod:`connector.cli` only parses the
arguments and maps the result to an exit code.

- :mod:`~connector.tools.timespec`: ``--since`` / ``--to`` times (ISO-8601 or ``30m``, ``1h``, ``2d`` ago);
- :mod:`~connector.tools.letters`: a dead letter read back with its provenance headers, the selection
  by stage and reason, printable previews;
- :mod:`~connector.tools.kafka_admin`: the Kafka clients of the tools (none joins the connector's group);
- :mod:`~connector.tools.dlq_inspect`: ``dlq inspect``;
- :mod:`~connector.tools.dlq_replay`: ``dlq replay``;
- :mod:`~connector.tools.offsets`: ``offsets show`` and ``offsets reset``.

None of them prints the settings: they hold the Altcraft token and the Kafka password.
"""

from __future__ import annotations


class ToolError(Exception):
    """A command cannot go on (missing topic, Kafka unreachable, a refused reset): said on stderr, exit 1."""
