"""Secrets in URLs: finding them (a config must not hold one) and masking them (every printed or written URL).

A store or tracking URL can carry a secret in two places: the password of its user part
(``postgresql://user:pw@host/db``, with any characters in ``pw``, ``/`` and ``@`` included) and a query
parameter (``?password=...``, ``sslpassword``, ``token``, ``api_key``, ...). :func:`url_secret` says which
one a URL holds; :func:`mask_url` is the one function that renders a URL for a message, a log line or a
file; :func:`redact` removes a URL's secrets from free text (a driver's error message that quotes it).

The URL is parsed with SQLAlchemy's :func:`~sqlalchemy.engine.make_url` (user, password, query), and the
user part is also read up to the *last* ``@`` so that a password holding an unescaped ``@`` is found
whole; anything after ``://`` that still looks like ``user:secret@`` is treated as a password.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
SECRET_QUERY_WORDS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "auth", "credential")
"""A query parameter whose name contains one of these (case-insensitive) holds a secret."""


def _is_secret_key(key: str) -> bool:
    k = unquote(key).lower()
    return k in ("pass", "key", "sig", "signature") or any(word in k for word in SECRET_QUERY_WORDS)


def _split(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme, userinfo, rest, query)`` of ``scheme://[userinfo@]rest[?query]``, or None without ``://``.

    The user part runs to the last ``@`` (a password may hold ``/``, ``?`` or ``@``); SQLite URLs have no
    user part (``sqlite:////a@b:c.db`` is a path)."""
    scheme, sep, after = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][\w+.-]*", scheme):
        return None
    userinfo = ""
    if not scheme.lower().startswith("sqlite") and "@" in after:
        userinfo, _, after = after.rpartition("@")
    rest, _, query = after.partition("?")
    return scheme, userinfo, rest, query


def _query_secrets(query: str) -> list[tuple[str, str]]:
    out = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if eq and _is_secret_key(key) and value:
            out.append((key, value))
    return out


def url_secret(url: str | None) -> str | None:
    """What secret ``url`` carries (``"a password"``, ``"a 'password' query parameter"``), or None."""
    if not url:
        return None
    parts = _split(url)
    if parts is not None:
        _, userinfo, _, query = parts
        if ":" in userinfo and userinfo.partition(":")[2]:
            return "a password"
        found = _query_secrets(query)
        if found:
            return f"a {unquote(found[0][0])!r} query parameter"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.password:
        return "a password"
    for key in parsed.query:
        if _is_secret_key(key):
            return f"a {key!r} query parameter"
    return None


def mask_url(url: str | None) -> str:
    """``url`` with every secret replaced by ``***`` (password, secret query values); other text unchanged.

    Example: ``mask_url("postgresql://u:p/w@h/db?sslpassword=x&sslmode=require")`` is
    ``postgresql://u:***@h/db?sslpassword=***&sslmode=require``."""
    if not url:
        return ""
    parts = _split(url)
    if parts is None:
        return url if url_secret(url) is None else "<URL with a secret>"
    scheme, userinfo, rest, query = parts
    if ":" in userinfo:
        userinfo = f"{userinfo.partition(':')[0]}:{MASK}"
    if query:
        items = []
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            items.append(f"{key}={MASK}" if eq and value and _is_secret_key(key) else item)
        query = "&".join(items)
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{rest}{'?' + query if query else ''}"


def redact(text: str, *urls: str | None) -> str:
    """``text`` with the secrets of each URL (password, secret query values, the whole unmasked URL)
    replaced, for error messages that quote what they were given."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, mask_url(url))
        secrets: list[str] = []
        parts = _split(url)
        if parts is not None:
            _, userinfo, _, query = parts
            if ":" in userinfo:
                secrets.append(userinfo.partition(":")[2])
            secrets += [v for _, v in _query_secrets(query)]
        try:
            parsed = make_url(url)
            if parsed.password:
                secrets.append(str(parsed.password))
            secrets += [v for k, vs in parsed.query.items() if _is_secret_key(k)
                        for v in ((vs,) if isinstance(vs, str) else vs)]
        except ArgumentError:
            pass
        for secret in sorted({s for s in secrets if s and s != MASK}, key=len, reverse=True):
            text = text.replace(secret, MASK)
            if unquote(secret) != secret:
                text = text.replace(unquote(secret), MASK)
    return text
