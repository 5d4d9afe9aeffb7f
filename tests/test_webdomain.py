"""Which domain a web request belongs to (web.md §3, router.md §6.5, §7.8):
the pure decision of ``services/webdomain.py`` over a real Router and
Directory, without HTTP."""

from __future__ import annotations

import pytest

from waypost.services.container import Services
from waypost.services.webdomain import Place, WebTarget, detect, host_name


@pytest.fixture
def web(svc: Services) -> Services:
    d = svc.directory
    d.create_domain("client.com")
    d.add_domain_alias("client.com", "mail.client.com")
    d.create_domain("sites.dom")
    d.create_account("john@sites.dom")
    d.create_domain("assigned.dom", {"AssignedIPAddresses": "192.0.2.7"})
    svc.router.set_table(
        svc.router.get_table()
        + "www.client.com = client.com\n"
        + "Access:*.sites.dom = *@sites.dom\n"
        + "<LoginPage%*@sites.dom> = *@sites.dom\n"
        + "<LoginPage@alice.main.dom> = alice@main.dom\n"
    )
    return svc


def test_domain_names_alias_and_router_record(web: Services) -> None:
    assert detect(web.router, "main.dom") == WebTarget(Place.DOMAIN, "main.dom", "main.dom")
    assert detect(web.router, "client.com:8100").domain == "client.com"
    assert detect(web.router, "CLIENT.COM.").domain == "client.com"
    assert detect(web.router, "mail.client.com").domain == "client.com"  # domain alias
    assert detect(web.router, "www.client.com:9100") == WebTarget(
        Place.DOMAIN, "www.client.com", "client.com")  # Router domain record
    assert detect(web.router, "secondary.dom").domain == "secondary.dom"


def test_a_route_to_an_account_is_a_personal_site(web: Services) -> None:
    assert detect(web.router, "john.sites.dom") == WebTarget(
        Place.SITE, "john.sites.dom", "sites.dom", "john@sites.dom")
    site = detect(web.router, "alice.main.dom")
    assert (site.place, site.account) == (Place.SITE, "alice@main.dom")
    # no such account behind the wildcard: not a site, and not some other domain
    assert detect(web.router, "nobody.sites.dom").place is Place.UNKNOWN


def test_unknown_hosts_are_unknown(web: Services) -> None:
    for host in ("example.org", "localhost", "client.co", "www.main.dom.evil"):
        target = detect(web.router, host)
        assert target.place is Place.UNKNOWN and target.domain == "", host


@pytest.mark.parametrize("bad", [
    "", " ", "a@main.dom", "LoginPage%main.dom", "x y", "main.dom:http", "[::1", "[zz]:80",
    "main.dom:123456", "a" * 300, "main..dom", "-x.dom", "main.dom/evil", "main.dom\x00",
])
def test_malformed_hosts_are_never_routed(web: Services, bad: str) -> None:
    target = detect(web.router, bad)
    assert target.place is Place.UNKNOWN and not target.domain
    assert all(c.isalnum() or c in ".:_[]-?" for c in target.host)


def test_ip_hosts(web: Services) -> None:
    assert detect(web.router, "192.0.2.7:8100").domain == "assigned.dom"
    assert detect(web.router, "192.0.2.8").domain == "main.dom"
    assert detect(web.router, "127.0.0.1:9100").domain == "main.dom"
    assert detect(web.router, "[::1]:8100").domain == "main.dom"
    # HTTP/1.0 without Host: the address the connection reached
    assert detect(web.router, None, "192.0.2.7").domain == "assigned.dom"
    assert detect(web.router, None, "::ffff:192.0.2.7").domain == "assigned.dom"
    assert detect(web.router, None, None).place is Place.UNKNOWN


def test_a_change_applies_to_the_next_request(web: Services) -> None:
    assert detect(web.router, "new.dom").place is Place.UNKNOWN
    web.directory.create_domain("new.dom")
    assert detect(web.router, "new.dom").domain == "new.dom"


def test_host_name() -> None:
    assert host_name("Main.Dom:8100") == ("main.dom", False)
    assert host_name("[2001:DB8::1]:9100") == ("2001:db8::1", True)
    assert host_name("10.0.0.1") == ("10.0.0.1", True)
    assert host_name(None) is None
