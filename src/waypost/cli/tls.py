"""``waypost tls show``: the certificate the listeners present.

The CLI is another process than the server: it resolves the pair as the
server does (settings TLSCertificate/TLSKey, else the self-signed pair in
``DATA/tls``), so after changing the settings it shows what the server uses
from its next start or SIGHUP on.
"""

from __future__ import annotations

import click

from waypost import tls
from waypost.cli.common import data_option, services
from waypost.cli.output import fail, keyvalues


@click.group("tls")
def tls_group() -> None:
    """The TLS certificate of every listener (STARTTLS, SMTPS, IMAPS, POP3S, HTTPS)."""


@tls_group.command("show")
@data_option
def show() -> None:
    """Subject, names (SAN), validity, issuer and fingerprint of the certificate in use."""
    with services() as svc:
        settings = svc.settings()
        files = tls.certificate_files(svc.data_dir, settings.text("TLSCertificate"),
                                      settings.text("TLSKey"), create=False)
    if files is None:
        fail("no certificate yet: `waypost serve` makes a self-signed one on its first start")
    try:
        details = tls.describe(files[0])
    except (OSError, ValueError) as exc:
        fail(f"cannot read the certificate {files[0]}: {exc}")
    keyvalues([*details, ("key file", str(files[1]))])


COMMANDS = [tls_group]
