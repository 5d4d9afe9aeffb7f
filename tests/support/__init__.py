"""Test helpers: loopback peers (DNS server, SMTP sink) and their fixtures."""
