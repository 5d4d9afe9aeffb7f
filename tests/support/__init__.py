"""Test helpers, imported as ``tests.support.<module>`` (the one import root).

Peers and servers: ``server`` (a real Waypost process), ``dns_server``,
``smtp_sink``, ``postfix``, ``dovecot``. Worlds and data: ``services`` (a
Services container with the shared small world), ``directory`` and
``router_table`` (the router.md §10 fixture), ``messages`` (sample MIME
messages), ``mailbox``. Drivers: ``delivery`` (queue and runner), ``cli``
(the `waypost` command), ``clock`` (an injected clock). Pytest fixtures live
in ``fixtures`` and are registered by ``tests/conftest.py``; test modules
never import each other.
"""
