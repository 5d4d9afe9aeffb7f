"""The WebUser interface below the HTTP engine (spec web.md §4-§5).

* ``wssp`` -- the WSSP compiler and renderer: pure, no I/O, no imports of
  services or protocols; a template error is logged and never raised.

This package sits between ``waypost.protocols`` and ``waypost.services``: the
HTTP engine calls it, it calls services, never the other way round.
"""
