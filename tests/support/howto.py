"""Texts the How To gives, shared by the tests that follow its recipes."""

from __future__ import annotations

HOWTO_LOGIN = """<!--%%IF secureChannel -->
<!--%%INCLUDE "login.wssi" -->
<!--%%ELSE -->
<META HTTP-EQUIV="REFRESH" CONTENT="0;URL=https://%%domainName%%/">
<!--%%ENDIF-->
"""
"""The Access recipe's ``login.wssp`` (web.md §4.6, issue 10 point 5): clear-text
visitors are sent to HTTPS, secure ones get the domain's old page (``login.wssi``)."""
