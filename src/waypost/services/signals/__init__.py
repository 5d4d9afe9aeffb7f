"""SIP decisions: digest authentication and the registrar (the proxy comes next).

Services only: plain values in, plain values out; the SIP session
(``protocols/sip``) parses the wire and glues these to it.
"""
