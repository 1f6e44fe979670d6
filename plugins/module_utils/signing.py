# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HMAC-SHA256 signatures of selfheal.core messages, for senders and receivers alike.

The signature covers a Unix timestamp, a dot and the body, so a captured
message cannot be replayed once the receiver's maximum age has passed.
"""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Selfheal-Signature"
TIMESTAMP_HEADER = "X-Selfheal-Timestamp"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float, signature_header: str = SIGNATURE_HEADER,
                   timestamp_header: str = TIMESTAMP_HEADER) -> dict[str, str]:
    """The two headers a sender adds to a signed request."""
    stamp = int(now)
    return {timestamp_header: str(stamp), signature_header: sign(secret, body, stamp)}


def verify(secret: str, body: bytes, timestamp: str, signature: str, now: float, max_age: float) -> str | None:
    """None when the signature is good and fresh, else why not (never with the secret in it)."""
    if not timestamp.isdigit():
        return "missing or malformed timestamp"
    if abs(now - int(timestamp)) > max_age:
        return f"signature timestamp is more than {max_age:.0f}s away from now"
    if not hmac.compare_digest(signature.encode(), sign(secret, body, int(timestamp)).encode()):
        return "missing or wrong HMAC signature"
    return None


def verify_body(secret: str, body: bytes, signature: str, algo: str = "sha256", fmt: str = "hex") -> str | None:
    """The ansible.eda webhook convention (GitHub-style): an HMAC of the body alone, in hex or base64,
    optionally prefixed with the algorithm (``sha256=``). No timestamp, so no replay protection."""
    import base64

    mac = hmac.new(secret.encode(), body, algo).digest()
    expected = mac.hex() if fmt == "hex" else base64.b64encode(mac).decode()
    given = signature.strip()
    prefix = f"{algo}="
    if given.lower().startswith(prefix):
        given = given[len(prefix):]
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "missing or wrong HMAC signature"
    return None
