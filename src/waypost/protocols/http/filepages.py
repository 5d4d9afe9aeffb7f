"""The WebUser "Files" page (web.md §6.1, issue 11 point 3): the account's
File Storage — its personal web site — listed, uploaded to (several files
at once; a file input is also a drop target, so drag and drop needs no
script), downloaded, with folders created, names changed, entries deleted
and the quota shown.

URLs: ``Files.wssp?Folder=<path>[&Done=<code>]``; ``FileGet?Path=<path>``
(a download: ``Content-Disposition: attachment`` and a sandboxing policy,
so an uploaded HTML file never runs in the WebUser origin); POST actions
``FileUpload`` (``Folder``, one or more ``File`` fields), ``FileMkdir``
(``Folder``, ``Name``), ``FileRename`` (``Path``, ``NewName``: a new name in
the same folder), ``FileDelete`` (``Path``; a folder with what is in it only
with ``Recursive=1``). Each action answers 303 to the folder's page.

Invariants: see :mod:`waypost.protocols.http.common`; every name and path
goes through :class:`waypost.services.files.AccountFiles` acting as the
session's account (its rules: names, traversal, quota); an uploaded file's
name must be one path component (a browser sends the base name; ``/`` or
``\\`` in it is refused, never taken as a folder). Refusals are pages with
the service's reason: 400 bad name, 404 missing, 409 exists or not empty,
507 over the quota.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import IO

from aiohttp import web

from waypost.protocols.http.common import (
    BadForm,
    ErrorTable,
    Form,
    SessionAction,
    SessionPage,
    WebUser,
    form_text,
    html_page,
    log,
    no_gzip,
    refusal,
    see_other,
    session_dataset,
)
from waypost.protocols.http.sessions import WebSession
from waypost.services.files import (
    CHUNK,
    AccountFiles,
    AlreadyExists,
    FileError,
    InvalidFileName,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    StoreError,
)
from waypost.web import files as webfiles

FILE_ERRORS: ErrorTable = (
    (QuotaExceeded, 507, "overQuota"),
    (InvalidFileName, 400, "badFileName"),
    (NotFound, 404, "notFound"),
    (AlreadyExists, 409, "exists"),
    (NotAllowed, 403, "noPermission"),
    (FileError, 409, "fileError"),
    (StoreError, 503, "storeError"),
)
MAX_PATH = 4096


async def file_refusal(app: WebUser, session: WebSession, exc: Exception) -> web.Response:
    return await refusal(app, session, exc, FILE_ERRORS, unavailable="The file storage "
                         "cannot answer now. Try again later.")


def _folder_url(folder: str, done: str = "") -> str:
    query = {"Folder": folder}
    if done:
        query["Done"] = done
    return "Files.wssp?" + urllib.parse.urlencode(query)


def _param(value: str | None) -> str:
    if value is None:
        return ""
    if len(value) > MAX_PATH or any(ord(c) < 32 for c in value):
        raise InvalidFileName("bad path")
    return value.strip("/")


async def files_page(app: WebUser, request: web.Request, session: WebSession
                     ) -> web.StreamResponse:
    try:
        folder = _param(request.query.get("Folder"))
        found = await app.run(webfiles.folder_page, AccountFiles(app.services),
                              session.account, folder, request.query.get("Done", ""))
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    dataset = session_dataset(request, session)
    dataset.update(found)
    body = await app.render(session.domain, session.skin, "Files.wssp", dataset)
    if body is None:
        return await file_refusal(app, session, NotFound("no Files.wssp in the skin"))
    return no_gzip(html_page(body))


def _open(app: WebUser, account: str, path: str) -> tuple[str, str | None, bytes | None]:
    """(name, local path to send, or the bytes when there is no local path)."""
    with AccountFiles(app.services).open(account, path, account) as opened:
        if opened.local_path is not None:
            return opened.entry.name, opened.local_path, None
        return opened.entry.name, None, opened.read()


async def file_get(app: WebUser, request: web.Request, session: WebSession
                   ) -> web.StreamResponse:
    """A stored file as a download (never rendered in this origin)."""
    try:
        path = _param(request.query.get("Path"))
        name, local, data = await app.run(_open, app, session.account, path)
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._ -") else "_"
                         for c in name)[:200] or "file"
    headers = {
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; "
                               f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    }
    if local is not None:
        response: web.StreamResponse = web.FileResponse(local, headers=headers)
        response.content_type = "application/octet-stream"
        return response
    plain = web.Response(body=data or b"", headers=headers)
    plain.content_type = "application/octet-stream"
    return plain


def _stream(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _upload(app: WebUser, account: str, folder: str,
            uploads: list[tuple[str, IO[bytes]]]) -> int:
    files = AccountFiles(app.services)
    for name, handle in uploads:
        path = f"{folder}/{name}" if folder else name
        files.write(account, path, _stream(handle), account)
    return len(uploads)


async def upload(app: WebUser, request: web.Request, session: WebSession, form: Form
                 ) -> web.StreamResponse:
    try:
        folder = _param(form_text(form, "Folder", MAX_PATH))
        uploads: list[tuple[str, IO[bytes]]] = []
        for field in form.getall("File", []):
            if not isinstance(field, web.FileField) or not field.filename:
                continue
            if "/" in field.filename or "\\" in field.filename:
                raise InvalidFileName(f"a file name may not contain / or \\: "
                                      f"{field.filename[:80]!r}")
            uploads.append((field.filename, field.file))
        if not uploads:
            raise BadForm("choose at least one file to upload")
        count = await app.run(_upload, app, session.account, folder, uploads)
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    log.info("WebUser %s uploaded %d file(s) to /%s", session.account, count, folder)
    return see_other(_folder_url(folder, "uploaded"))


async def mkdir(app: WebUser, request: web.Request, session: WebSession, form: Form
                ) -> web.StreamResponse:
    try:
        folder = _param(form_text(form, "Folder", MAX_PATH))
        name = form_text(form, "Name", 255).strip()
        if not name or "/" in name:
            raise InvalidFileName("a folder name is one name, without /")
        path = f"{folder}/{name}" if folder else name
        await app.run(AccountFiles(app.services).mkdir, session.account, path, session.account)
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    return see_other(_folder_url(folder, "created"))


async def rename(app: WebUser, request: web.Request, session: WebSession, form: Form
                 ) -> web.StreamResponse:
    try:
        path = _param(form_text(form, "Path", MAX_PATH))
        new = form_text(form, "NewName", 255).strip()
        if not path or not new or "/" in new:
            raise InvalidFileName("the new name is one name, without /")
        folder = path.rpartition("/")[0]
        target = f"{folder}/{new}" if folder else new
        await app.run(AccountFiles(app.services).rename, session.account, path, target,
                      session.account)
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    return see_other(_folder_url(folder, "renamed"))


async def delete(app: WebUser, request: web.Request, session: WebSession, form: Form
                 ) -> web.StreamResponse:
    try:
        path = _param(form_text(form, "Path", MAX_PATH))
        if not path:
            raise InvalidFileName("the storage root cannot be deleted")
        await app.run(AccountFiles(app.services).delete, session.account, path,
                      session.account, recursive=form_text(form, "Recursive", 8) == "1")
    except (FileError, StoreError) as exc:
        return await file_refusal(app, session, exc)
    return see_other(_folder_url(path.rpartition("/")[0], "deleted"))


PAGES: dict[str, SessionPage] = {"Files.wssp": files_page, "FileGet": file_get}
ACTIONS: dict[str, SessionAction] = {
    "FileUpload": upload,
    "FileMkdir": mkdir,
    "FileRename": rename,
    "FileDelete": delete,
}
