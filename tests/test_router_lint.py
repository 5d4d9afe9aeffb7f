"""Router table warnings (issue 11 point 5): a wildcard record that takes
mail or signals away from a server domain is reported with its line."""

from __future__ import annotations

from waypost.services.router.lint import caught_domains
from waypost.services.router.table import compile_table
from waypost.services.router.view import DirectorySnapshot, DomainView

SNAP = DirectorySnapshot(
    main_domain="company.dom",
    domains={name: DomainView(name) for name in ("company.dom", "dept1.company.dom",
                                                 "domain.dom")},
    domain_aliases={"sales.company.dom": "company.dom"},
)


def caught(text: str) -> list[tuple[int, str, str]]:
    return [(c.line, c.domain, c.kind.value)
            for c in caught_domains(compile_table(text, ["company.dom"]), SNAP)]


def test_the_how_to_main_domain_records_catch_a_subdomain() -> None:
    assert caught("*.company.dom = *@fict\n<LoginPage%*@fict> = *\n") == [
        (1, "dept1.company.dom", "mail"), (1, "sales.company.dom", "mail")]


def test_kind_prefixes_and_other_records_are_quiet() -> None:
    assert caught("Access:*.company.dom = *@fict\n") == []
    assert caught("*.domain.dom = *@domain.dom\n<LoginPage%*@domain.dom> = *@domain.dom\n") \
        == []
    assert caught("dept1.company.dom = dept1.company.dom._via\n") == []  # deliberate, exact
    assert caught("Signal:*.company.dom = *@fict\n") == [
        (1, "dept1.company.dom", "signal"), (1, "sales.company.dom", "signal")]


def test_the_first_matching_record_is_the_one_reported() -> None:
    text = "Access:*.company.dom = *@fict\n*1.company.dom = *@elsewhere.example\n"
    assert caught(text) == [(2, "dept1.company.dom", "mail")]
