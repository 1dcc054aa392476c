"""Secrets out of anything shown: the password of a URL, in settings output and logs alike.

Over-masking is the safe failure: when a URL's shape is ambiguous (an ``@`` outside the authority, a
password with an unencoded ``/``), everything up to the last ``@`` is masked."""

from __future__ import annotations

import re

MASK = "***"
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=)[^&;#\s]*"
)


def redact_url(url: str) -> str:
    """``url`` with its userinfo (``user:password@``) and secret query parameters (``?password=``) masked;
    text without ``://`` is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        at = rest.rfind("@")  # an unencoded "/" or "?" inside the password: mask to the last "@"
    if at >= 0:
        rest = f"{MASK}{rest[at:]}"
    return scheme + sep + _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, rest)
