"""Delivery: turning queued messages into local stores or SMTP relays (dns: target resolution)."""
