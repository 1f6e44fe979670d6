# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""POST a JSON document to a receiver the way every selfheal.core module does.

Connection errors, HTTP 5xx and 429 are retried with a short backoff (the
receiver's Retry-After when it gives seconds); any other answer outside 2xx
fails at once; redirects are not followed. Error messages name the
receiver's host and port, never the URL's path or query (which often carry a
secret), and never a secret given in `secrets`.
"""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

REDACTED = "<secret>"
_READ_LIMIT = 65536
_ERROR_BODY = 2000
_MAX_BACKOFF = 10.0


class PostError(Exception):
    """The receiver did not take the document; `status` is its HTTP answer (None when unreachable)."""

    def __init__(self, message: str, status: int | None = None, body: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.attempts = attempts

    def error_field(self) -> str:
        """The receiver's own reason, when it answered JSON with an `error` field."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return ""
        return str(value.get("error", "")) if isinstance(value, dict) else ""


def receiver(url: str) -> str:
    """host[:port] of a URL: what messages may name (the path and query may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before the next attempt: the receiver's Retry-After when it gives seconds, else 0.5, 1, 2..."""
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after), _MAX_BACKOFF)
    return min(0.5 * 2 ** (attempt - 1), _MAX_BACKOFF)


def scrub(text: str, url: str, secrets: list[str]) -> str:
    """Text fit for a message: no URL path or query, no secret."""
    path = url.split("://", 1)[-1].partition("/")[2]
    for secret in [url, *secrets, f"/{path}" if path else ""]:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def post_json(url: str, data: bytes, headers: dict[str, str], timeout: float, validate_certs: bool,
              retries: int, secrets: list[str], agent: str) -> tuple[int, int]:
    """POST until the receiver accepts: (HTTP status, attempts), or PostError saying why not."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    host = receiver(url)
    attempts = 0
    while True:
        attempts += 1
        retry_after = None
        status: int | None = None
        body = ""
        try:
            resp = open_url(url, data=data, headers=headers, method="POST", timeout=timeout,
                            validate_certs=validate_certs, follow_redirects="none", http_agent=agent)
            try:
                resp.read(_READ_LIMIT)
            finally:
                resp.close()
            return resp.getcode(), attempts
        except urllib.error.HTTPError as exc:
            status = exc.code
            retryable = exc.code >= 500 or exc.code == 429
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            try:
                body = exc.read(_ERROR_BODY).decode("utf-8", errors="replace").strip()
            except (OSError, http.client.HTTPException):
                body = ""
            finally:
                exc.close()
            why = f"answered HTTP {exc.code} {exc.reason}" + (f": {body[:200]}" if body else "")
        except (urllib.error.URLError, OSError, http.client.HTTPException, UrlsConnectionError) as exc:
            retryable = True
            why = f"is unreachable: {getattr(exc, 'reason', None) or exc}"
        if not retryable or attempts > retries:
            plural = "s" if attempts > 1 else ""
            raise PostError(scrub(f"receiver {host} {why} (after {attempts} attempt{plural})", url, secrets),
                            status, scrub(body, url, secrets), attempts)
        time.sleep(_backoff(attempts, retry_after))


def as_json(document: Any) -> bytes:
    return json.dumps(document).encode()
