"""Composing and sending mail from a session (issue 10 point 6): compose,
reply, reply-all and forward with attachments, sent through the submission
path SMTP AUTH uses and saved to Sent.

URLs: ``GET Compose.wssp[?To=]`` (an empty form), ``GET Compose.wssp?
Mailbox=&UID=&Mode=reply|replyall|forward`` (prefilled from the original,
which needs the ``r`` right: a refusal is the 403/404 error page);
``POST Send`` (``multipart/form-data``: ``To``, ``Cc``, ``Bcc``, ``Subject``,
``Body``, any number of ``Attachment`` files, ``Forward`` part numbers of the
original's attachments, hidden ``Mailbox``/``UID``/``Mode``, ``csrfToken``).

Send builds the message (:mod:`waypost.web.compose`), routes every
recipient as an authenticated SMTP client's RCPT and submits it with a
``with HTTPA`` trace line (:func:`waypost.services.submission.submit_message`:
server-wide rules, routing and the queue as for SMTP AUTH). Only once the
queue has it: a ``\\Seen`` copy goes to the ``SentBox`` preference, the
original gets ``\\Answered`` or ``$Forwarded``, and the answer is 303 to
the original's mailbox (or the mailbox list) with ``Done=sent``. A form
that cannot be sent (a line break in a header field, a bad or refused
address, a rule's ``Reject with``, too big) is shown again with the values
typed and an ``errorCode`` (status 400, 403 for a rule, 503 when the queue
failed); nothing is sent or saved then. Files must be attached again.

Bodies larger than ``WebUserMaxRequest`` are refused by aiohttp before
the action runs (413); the message itself is bounded by ``MaxMessageSize``,
as over SMTP.

Invariants: see :mod:`waypost.protocols.http.common`.
"""

from __future__ import annotations

from aiohttp import web

from waypost.protocols.http.common import (
    Form,
    SessionAction,
    SessionPage,
    WebUser,
    client_ip,
    form_text,
    html_page,
    log,
    mail_refusal,
    no_gzip,
    see_other,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.mailaccess.errors import MailboxError, NotFound, StoreError
from waypost.services.rules.enqueue import RuleRejected
from waypost.services.submission import RecipientRefused, SubmissionRefused, submit_message
from waypost.web import compose as webcompose
from waypost.web import mail as webmail
from waypost.web.compose import ComposeError, Draft, Original, Upload

MAX_FIELD = 16_384
MAX_BODY = 4 * 1024 * 1024
MAX_FILES = 50


def original_ref(mailbox: str, uid: str, mode: str) -> tuple[str, int, str] | None:
    """(mailbox, UID, mode) of a reply or forward, None for a new message;
    :class:`webmail.BadRequest` for a bad parameter."""
    if not mode and not mailbox and not uid:
        return None
    if mode not in webcompose.MODES:
        raise webmail.BadRequest("bad Mode")
    return webmail.check_mailbox(mailbox), webmail.check_uid(uid), mode


async def render_form(app: WebUser, request: web.Request, session: WebSession, draft: Draft,
                      original: Original | None, error: ComposeError | None = None,
                      status: int = 200) -> web.Response:
    sender = await app.run(webcompose.sender_of, app.services, session.account)
    dataset = session_dataset(request, session)
    dataset.update(webcompose.form_dataset(draft, original, webcompose.display(*sender), error))
    body = await app.render(session.domain, session.skin, "Compose.wssp", dataset)
    if body is None:
        return await mail_refusal(app, request, session, NotFound("no Compose.wssp in the skin"))
    return no_gzip(html_page(body, status))


async def compose_page(app: WebUser, request: web.Request, session: WebSession
                       ) -> web.Response:
    """``Compose.wssp``: a new message, or a reply/reply-all/forward prefilled
    from an original the user may read."""
    query = request.query
    try:
        ref = original_ref(query.get("Mailbox", ""), query.get("UID", ""), query.get("Mode", ""))
        original = None
        if ref is None:
            draft = Draft(to=query.get("To", "")[:MAX_FIELD])
        else:
            original = await app.run(webcompose.read_original, app.mail, session.account,
                                     ref[0], ref[1])
            own = await app.run(webcompose.own_addresses, app.services, session.account)
            draft = webcompose.prefill(original, ref[2], own)
    except (webmail.BadRequest, MailboxError, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    return await render_form(app, request, session, draft, original)


def draft_of(form: Form) -> Draft:
    """The posted form's fields (:class:`BadForm` for an over-long one)."""
    uid = form_text(form, "UID", 12)
    draft = Draft(
        to=form_text(form, "To", MAX_FIELD), cc=form_text(form, "Cc", MAX_FIELD),
        bcc=form_text(form, "Bcc", MAX_FIELD), subject=form_text(form, "Subject", 2000),
        body=form_text(form, "Body", MAX_BODY), mailbox=form_text(form, "Mailbox", 1024),
        mode=form_text(form, "Mode", 20),
        forward_parts=[v for v in form.getall("Forward", []) if isinstance(v, str)][:MAX_FILES],
    )
    draft.uid = int(uid) if uid.isdigit() and len(uid) <= 10 else None
    return draft


def uploads_of(form: Form) -> list[Upload]:
    """The files of the form's ``Attachment`` inputs (an empty input is no file)."""
    out = []
    for value in form.getall("Attachment", []):
        if not isinstance(value, web.FileField) or not value.filename:
            continue
        data = value.file.read()
        if not data and not value.filename.strip():
            continue
        out.append(Upload(webcompose.safe_filename(value.filename),
                          webcompose.content_type(value.content_type), data))
    return out[:MAX_FILES]


async def send_action(app: WebUser, request: web.Request, session: WebSession, form: Form
                      ) -> web.Response:
    """``POST Send``: build, submit as SMTP AUTH does, then save to Sent."""
    draft = draft_of(form)
    original: Original | None = None
    try:
        ref = original_ref(draft.mailbox, str(draft.uid or ""), draft.mode)
        if ref is not None:
            original = await app.run(webcompose.read_original, app.mail, session.account,
                                     ref[0], ref[1])
    except (webmail.BadRequest, MailboxError, StoreError) as exc:
        return await mail_refusal(app, request, session, exc)
    if original is None:
        draft.mode = draft.mailbox = ""
        draft.uid = None
    try:
        if app.reception is None:
            raise ComposeError("noSending")
        uploads = await app.run(uploads_of, form)  # spooled files: disk reads
        to, cc, bcc = webcompose.check_draft(draft)
        if original is not None and draft.mode == "forward":
            uploads = await app.run(webcompose.forwarded, app.mail, session.account, original,
                                    draft.forward_parts) + uploads
        sender = await app.run(webcompose.sender_of, app.services, session.account)
        message = await app.run(webcompose.build_message, draft, sender=sender,
                                main_domain=app.reception.main_domain, original=original,
                                uploads=uploads)
        addresses = list(dict.fromkeys(a for _, a in to + cc + bcc))
        queue_id = await submit_message(app.reception, account=session.account,
                                        addresses=addresses, message=message,
                                        client_ip=client_ip(request))
    except ComposeError as exc:
        return await render_form(app, request, session, draft, original, exc,
                                 503 if exc.code == "noSending" else 400)
    except RecipientRefused as exc:
        error = ComposeError("recipientRefused", detail=exc.text, address=exc.address)
        return await render_form(app, request, session, draft, original, error, 400)
    except SubmissionRefused as exc:
        return await render_form(app, request, session, draft, original,
                                 ComposeError("tooBig", detail=str(exc)), 400)
    except RuleRejected as exc:
        log.info("WebUser %s: message rejected by rule %r: %s", session.account, exc.rule,
                 exc.text)
        return await render_form(app, request, session, draft, original,
                                 ComposeError("ruleRejected", detail=exc.text), 403)
    except (MailboxError, StoreError, webmail.BadRequest) as exc:
        return await mail_refusal(app, request, session, exc)
    except Exception:
        log.exception("WebUser %s: could not queue a message", session.account)
        return await render_form(app, request, session, draft, original,
                                 ComposeError("sendFailed"), 503)
    log.info("WebUser %s from %s: queued %s for %d recipient(s), %d octets", session.account,
             client_ip(request), queue_id, len(addresses), len(message))
    done = "sent"
    try:
        await app.run(webcompose.save_sent, app.mail, app.services, session.account, message)
    except (MailboxError, StoreError) as exc:
        log.warning("WebUser %s: sent %s but could not save it: %s", session.account,
                    queue_id, exc)
        done = "sentNotSaved"
    if original is None:
        return see_other(f"Mailboxes.wssp?Done={done}")
    await app.run(webcompose.mark_original, app.mail, session.account, original.mailbox,
                  original.uid, draft.mode)
    return see_other(f"Mailbox.wssp?Mailbox={webmail.quote(original.mailbox)}&Done={done}")


PAGES: dict[str, SessionPage] = {"Compose.wssp": compose_page}
ACTIONS: dict[str, SessionAction] = {"Send": send_action}
