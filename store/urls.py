"""The one masking function for URLs that may carry credentials (stdlib only).

    mask_url("postgresql+asyncpg://orch:hunter2@db:5432/orch")   # 'postgresql+asyncpg://orch:***@db:5432/orch'
    mask_url("https://tok@host/v1?api_key=abc&x=1")              # 'https://***@host/v1?api_key=***&x=1'

Every URL the project prints or logs (the store's, an expert's, the gateway's) goes through it.
It lives at the bottom layer so the store, the experts' backends and every face can share it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
# query parameters whose values are credentials (api_key, access_token, password, sig, ...)
_SECRET_PARAM = re.compile(r"pass|secret|token|key|auth|sig|credential", re.IGNORECASE)


def mask_url(url: str) -> str:
    """`url` with its password (or a lone user part, often a token) and credential-like query
    values replaced by `***`; anything that does not parse as a URL is masked whole."""
    try:
        parts = urlsplit(str(url))
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return MASK
    out = str(url)
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        out = out.replace(parts.netloc, f"{user}:{MASK}@{host}" if has_password else f"{MASK}@{host}", 1)
    if parts.query:  # edited in place: urlunsplit would rewrite `sqlite:////abs/path` URLs
        out = out.replace("?" + parts.query, "?" + "&".join(_mask_param(p) for p in parts.query.split("&")), 1)
    return out


def has_credentials(url: str) -> bool:
    """Whether `url` carries credentials that `mask_url` would hide."""
    return mask_url(url) != url


def mask_text(text: str, url: str) -> str:
    """`text` (say, a driver's error message) with `url` masked and its password hidden wherever
    it appears."""
    text = text.replace(url, mask_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, MASK)
    return text


def _mask_param(pair: str) -> str:
    name, eq, value = pair.partition("=")
    return f"{name}={MASK}" if eq and value and _SECRET_PARAM.search(name) else pair
