"""SIP decisions: digest authentication, the registrar, and where a request
goes (``routing.decide``, ``nexthop.resolve``; the proxy that acts on them
is ``protocols/sip/proxy.py``).

Services only: plain values in, plain values out; the SIP session
(``protocols/sip``) parses the wire and glues these to it. A REGISTER
(RFC 3261 §10.3), in a worker thread where marked blocking:

1. ``registrar.challenge_realm(services, to)``: None answers ``404 Not
   Found``; else it is the realm (the domain).
2. No ``Authorization`` for that realm: ``401`` with one
   ``WWW-Authenticate`` per value of ``digest.challenges(realm,
   nonces.shared_nonces().issue(realm), algorithms=digest.offered(settings))``
   (the ``SIPDigestAlgorithms`` order, SHA-256 first by default).
3. ``digest.parse_credentials(value)`` (``DigestError``: ``400``), then
   ``await digest.verify(services, shared_guard(), shared_nonces(),
   settings, DigestRequest(...))``: ``OK`` gives the account; ``STALE``
   and ``REFUSED`` answer ``401`` with a new challenge (``stale=True`` for
   the first); ``MALFORMED`` answers ``400``.
4. ``await registrar.handle_register(services, RegisterRequest(...))``:
   the status and reason to send, ``Min-Expires`` for a 423, and for a 200
   one Contact per binding with its ``expires`` (and ``q``,
   ``+sip.instance``, ``reg-id`` when it has them).
"""
