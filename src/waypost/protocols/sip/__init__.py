"""SIP (RFC 3261): the pure wire format (``wire``, with ``syntax``, ``uri``
and ``headers``); the transaction layer and the session come beside it."""
