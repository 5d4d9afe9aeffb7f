"""IMAP4rev1 (RFC 3501) with IDLE, NAMESPACE, UIDPLUS, MOVE, SPECIAL-USE,
LITERAL+, ENABLE, ID, UNSELECT, ACL and LIST-EXTENDED basics.

The pure layers live here, apart from the session so each is testable on
bytes: ``wire`` (command reader, parser, modified UTF-7, serialisers),
``fetch`` (FETCH response items from a cached parse) and ``search``
(SEARCH program evaluation).
"""
