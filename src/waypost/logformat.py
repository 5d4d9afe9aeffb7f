"""Log line formats of ``waypost serve``: text (the default) or JSON lines.

``--log-format json`` turns every log line into one JSON object, for log
shippers: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and,
when the record carries structured ``fields`` (the delivery log,
``services/delivery/deliverylog.py``), each field as a key of its own. A
traceback becomes ``exception``. Field names never shadow the four base keys.

Under ``waypost serve --workers N`` (N > 1) every line names its process, so
that one log of several processes can be read: ``w0`` .. ``wN-1`` for the
workers and ``sup`` for the supervisor, after the level in text lines
(``... INFO w1 waypost.smtp: ...``) and as the ``worker`` key in JSON. A lone
process (``--workers 1``) writes its lines exactly as before.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TAGGED_FORMAT = "%(asctime)s %(levelname)s {tag} %(name)s: %(message)s"
FORMATS = ("text", "json")


class JSONFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag
        """The process's name among several (``w1``, ``sup``); empty for a lone process."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.tag:
            out["worker"] = self.tag
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(kind: str, tag: str = "") -> logging.Formatter:
    """The formatter of ``kind``; ``tag`` names the process in every line (see above)."""
    if kind == "json":
        return JSONFormatter(tag)
    return logging.Formatter(TAGGED_FORMAT.format(tag=tag) if tag else TEXT_FORMAT)
