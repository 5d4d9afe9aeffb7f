"""The dataset of the WebUser "Files" page (web.md §6.1, issue 11 point 3):
a folder of the account's File Storage, its breadcrumbs, the quota.

Invariants: every value is HTML-escaped here (names are the user's own
text: ``<script>.html`` is a valid file name) with URL-encoded twins
(``...URL``) for links and form values; blocking (call in the pool).
"""

from __future__ import annotations

import html
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from waypost.services.files import AccountFiles, FileLimits, FileUsage

NOTICES = {
    "uploaded": "The files were uploaded.",
    "created": "The folder was created.",
    "renamed": "The name was changed.",
    "deleted": "Deleted.",
}
"""Result codes a redirect may carry (``Done=``); never free text."""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def size_text(size: int | None) -> str:
    if size is None:
        return "unlimited"
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def quota(usage: FileUsage, limits: FileLimits) -> dict[str, Any]:
    out: dict[str, Any] = {
        "usedBytes": size_text(usage.bytes),
        "maxBytes": size_text(limits.max_bytes),
        "usedFiles": usage.files,
        "maxFiles": "unlimited" if limits.max_files is None else limits.max_files,
    }
    if limits.max_bytes:
        out["percent"] = min(100, round(100 * usage.bytes / limits.max_bytes))
    return out


def folder_page(files: AccountFiles, account: str, folder: str, done: str = "") -> dict[str, Any]:
    """``Files.wssp``'s dataset for ``folder`` ("" the root)."""
    entries = files.list(account, folder)
    info = files.info(account)
    rows = []
    for entry in sorted(entries, key=lambda e: (not e.is_folder, e.name.casefold())):
        row: dict[str, Any] = {
            "name": _esc(entry.name),
            "path": _esc(entry.path),
            "pathURL": _quote(entry.path),
            "modified": datetime.fromtimestamp(entry.mtime, UTC).strftime("%Y-%m-%d %H:%M"),
        }
        if entry.is_folder:
            row["isFolder"] = True
        else:
            row["size"] = size_text(entry.size)
        rows.append(row)
    crumbs = []
    parts = [p for p in folder.split("/") if p]
    for i, part in enumerate(parts):
        crumbs.append({"name": _esc(part), "pathURL": _quote("/".join(parts[:i + 1]))})
    dataset: dict[str, Any] = {
        "folder": _esc("/".join(parts)),
        "folderURL": _quote("/".join(parts)),
        "files": rows,
        "crumbs": crumbs,
        **quota(info.usage, info.limits),
    }
    if not rows:
        dataset["empty"] = True
    if parts:
        dataset["parentURL"] = _quote("/".join(parts[:-1]))
    if done in NOTICES:
        dataset["notice"] = NOTICES[done]
    return dataset
