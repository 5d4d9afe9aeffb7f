"""The Directory of router.md §10, built through the public Directory API.

Shared by the Directory tests and the Router's worked examples (those set
the Router Table themselves). Every account gets a known password from
:data:`PASSWORDS` so protocol tests can log in.
"""

from __future__ import annotations

from waypost.services.directory import Directory

MAIN_DOMAIN = "main.dom"
SERVER_IPS = "127.0.0.1, 192.0.2.10"

PASSWORDS: dict[str, str] = {
    "postmaster@main.dom": "postmaster-secret",
    "john@main.dom": "john-main-secret",
    "dd-customer@main.dom": "dd-main-secret",
    "security@main.dom": "security-secret",
    "alice@domain.dom": "alice-secret",
    "john@domain.dom": "john-domain-secret",
    "dd-customer@client.dom": "dd-client-secret",
}


def build_spec_fixture(directory: Directory) -> Directory:
    """Populate an empty store with the §10 fixture; returns ``directory``."""
    directory.init_server(MAIN_DOMAIN)
    directory.store.set_setting("ServerIPAddresses", SERVER_IPS)
    for domain in ("domain.dom", "client.dom", "dept1.company.dom"):
        directory.create_domain(domain)
    for address, password in PASSWORDS.items():
        if address.startswith("postmaster@"):
            directory.set_password(address, password)
        else:
            directory.create_account(address, password=password)
    directory.add_alias("ali@domain.dom", "alice@domain.dom")
    directory.create_forwarder("fwd@domain.dom", "bob@friend.com")
    directory.set_domain_settings("domain.dom", {
        "MailToUnknown": "Rerouted to",
        "MailRerouteAddress": "*%domain.dom@otherserver.dom._via",
    })
    directory.set_domain_settings("client.dom", {"MailToUnknown": "Rejected"})
    return directory
