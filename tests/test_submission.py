"""The authenticated submission SMTP AUTH and the WebUser's Send share
(``services/submission.py``): each recipient routed as a trusted client's
RCPT, the size and recipient limits, the trace line, the real queue.

End to end (HTTP, IMAP, a relay) is ``tests/test_http_compose.py``; here
the service over a real store and a real :class:`Queue`, no server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from waypost.services.container import Services
from waypost.services.queue import Queue
from waypost.services.reception import Reception
from waypost.services.submission import (
    RecipientRefused,
    SubmissionRefused,
    received_header,
    submit_message,
)

T = TypeVar("T")
MESSAGE = b"From: alice@main.dom\r\nTo: x\r\nSubject: t\r\n\r\nHello.\r\n"


def with_reception(svc: Services, work: Callable[[Reception, Queue], Awaitable[T]]) -> T:
    async def go() -> T:
        queue = Queue(svc)
        try:
            return await work(Reception(svc, queue), queue)
        finally:
            await queue.close()

    return asyncio.run(go())


def test_a_submission_is_routed_traced_and_queued(svc: Services) -> None:
    async def work(reception: Reception, queue: Queue) -> tuple[str, list]:
        queue_id = await submit_message(
            reception, account="alice@main.dom", client_ip="192.0.2.7", message=MESSAGE,
            addresses=["carol@secondary.dom", "team@main.dom", "someone@remote.example"])
        return queue_id, await queue.list()

    queue_id, queued = with_reception(svc, work)
    [stored] = queued
    assert stored.id == queue_id
    assert stored.mail_from == "alice@main.dom" and stored.auth_user == "alice@main.dom"
    assert stored.trusted and stored.protocol == "HTTPA" and stored.client_ip == "192.0.2.7"
    # the group expands to its members; the remote address is relayed (trusted)
    assert sorted(r.address for r in stored.recipients) == [
        "carol@secondary.dom", "someone@remote.example", "team@main.dom", "team@main.dom"]
    assert stored.size > len(MESSAGE) + 60  # the trace line on top


def test_a_refused_recipient_queues_nothing(svc: Services) -> None:
    async def work(reception: Reception, queue: Queue) -> list:
        with pytest.raises(RecipientRefused) as refused:
            await submit_message(reception, account="alice@main.dom", client_ip="192.0.2.7",
                                 message=MESSAGE,
                                 addresses=["carol@secondary.dom", "nobody@main.dom"])
        assert refused.value.address == "nobody@main.dom"
        assert refused.value.smtp[0] == 550 and refused.value.text
        return await queue.list()

    assert with_reception(svc, work) == []


def test_size_and_recipient_limits_are_those_of_smtp(svc: Services) -> None:
    svc.set_setting("MaxMessageSize", "1K")
    svc.set_setting("MaxRecipients", "2")

    async def work(reception: Reception, queue: Queue) -> list:
        with pytest.raises(SubmissionRefused, match="at most 1024"):
            await submit_message(reception, account="alice@main.dom", client_ip="192.0.2.7",
                                 message=MESSAGE + b"x" * 1024,
                                 addresses=["carol@secondary.dom"])
        with pytest.raises(SubmissionRefused, match="Too many recipients"):
            await submit_message(reception, account="alice@main.dom", client_ip="192.0.2.7",
                                 message=MESSAGE,
                                 addresses=["carol@secondary.dom", "alice@main.dom",
                                            "dd-customer@main.dom"])
        return await queue.list()

    assert with_reception(svc, work) == []


def test_the_trace_line() -> None:
    web = received_header(helo="", client_ip="192.0.2.7", hostname="main.dom",
                          protocol="HTTPA", queue_id="Q1", addresses=["a@b.example"])
    assert re.fullmatch(
        rb"Received: from \[192\.0\.2\.7\]\r\n\tby main\.dom \(Waypost\) with HTTPA id Q1"
        rb"\r\n\tfor <a@b\.example>;\r\n\t[A-Z][a-z]{2}, .+ GMT\r\n", web)
    smtp = received_header(helo="client.example", client_ip="192.0.2.7", hostname="main.dom",
                           protocol="ESMTPSA", queue_id="Q2",
                           addresses=["a@b.example", "c@d.example", "a@b.example"])
    assert smtp.startswith(b"Received: from client.example ([192.0.2.7])\r\n\tby main.dom "
                           b"(Waypost) with ESMTPSA id Q2;\r\n")
