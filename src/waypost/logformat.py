"""Log line formats of ``waypost serve``: text (the default) or JSON lines.

``--log-format json`` turns every log line into one JSON object, for log
shippers: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and,
when the record carries structured ``fields`` (the delivery log,
``services/delivery/deliverylog.py``), each field as a key of its own. A
traceback becomes ``exception``. Field names never shadow the four base keys.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    return JSONFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
