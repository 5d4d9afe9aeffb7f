"""SMTP: pure wire format, outbound client, server session."""
