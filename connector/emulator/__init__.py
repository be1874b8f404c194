"""A local stand-in for the Altcraft API, with fault injection and inspection endpoints.

One room per step (README.md, "The Altcraft API emulator", describes the behaviour):

- ``server``: :class:`~connector.emulator.server.Emulator`, the object that starts it all;
- ``httpd``: HTTP/1.1, request bodies, transport faults, answers on the wire;
- ``prepare``: body -> parsed, validated request (in worker processes for big bodies);
- ``handlers``: the endpoints' logic; ``importer``: matching, storing, engaging a batch;
- ``state``, ``profiles``, ``engagements``, ``dedup``, ``tasks``, ``order``: what it remembers (pure);
- ``validation``, ``xmlbody``, ``faults``, ``replies``, ``views``: pure helpers;
- ``config``, ``cli``, ``bench``: settings, the ``emulator`` command, the throughput bench.
"""
