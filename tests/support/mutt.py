"""mutt, the terminal mail client, as a test peer: a muttrc that logs in to a
loopback IMAP server in plain text and never stops to ask (no confirmations,
no caches, quit without prompting), so keys pushed with ``-e 'push ...'``
run to the end."""

from __future__ import annotations


def muttrc(user: str, password: str, port: int) -> str:
    return f"""set imap_user = "{user}"
set imap_pass = "{password}"
set ssl_starttls = no
set ssl_force_tls = no
set imap_authenticators = "login"
set folder = "imap://127.0.0.1:{port}/"
set spoolfile = ""
set mbox_type = mbox
set confirmappend = no
set confirmcreate = no
set quit = yes
set move = no
set sort = date-sent
set header_cache = ""
set message_cachedir = ""
set imap_passive = yes
set timeout = 5
set mail_check = 60
set wait_key = no
"""
