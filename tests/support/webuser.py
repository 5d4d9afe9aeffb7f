"""Logging in to WebUser the way a browser does: the login form's CSRF token,
then the POST; the session's URL prefix (``/Session/<id>/``) comes back."""

from __future__ import annotations

import re

import httpx


def login_session(client: httpx.Client, name: str, password: str) -> str:
    page = client.get("/")
    token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:300]
    done = client.post("/login", data={"Username": name, "Password": password,
                                       "csrfToken": token.group(1)})
    assert done.status_code == 303, done.text[:300]
    return str(done.headers["location"]).rsplit("/", 1)[0] + "/"
