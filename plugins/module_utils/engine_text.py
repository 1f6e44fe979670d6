# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Text that survives ansible-rulebook's rule engine, whatever its characters.

The engine (Drools, in a JVM reached through jpy) hands matched events back
to Python one UTF-16 unit at a time: a character outside the Basic
Multilingual Plane (an emoji) comes back as two lone surrogate halves, the
extra vars of `run_playbook` are then invalid, and the playbook never starts.
Stock sources have that bug. Ours hand the engine only BMP text: every
character above U+FFFF becomes two characters of the Private Use Area
(U+E000-U+E3FF then U+E400-U+E7FF, the surrogate scheme moved there), which
the engine carries intact; `restore` turns them back, in the playbook (the
`selfheal.core.restore_text` filter) or anywhere else. The intake and the
store keep the original text.

A pair of those Private Use characters in an alert's own text would also be
restored as one character: Private Use text has no meaning outside the
system that wrote it, and no alerting system we know of writes it.
"""
from __future__ import annotations

import re
from typing import Any

_HIGH, _LOW = 0xE000, 0xE400
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_PAIR = re.compile("([\ue000-\ue3ff])([\ue400-\ue7ff])")


def _down(match: re.Match[str]) -> str:
    offset = ord(match.group()) - 0x10000
    return chr(_HIGH + (offset >> 10)) + chr(_LOW + (offset & 0x3FF))


def _up(match: re.Match[str]) -> str:
    return chr(0x10000 + ((ord(match.group(1)) - _HIGH) << 10) + (ord(match.group(2)) - _LOW))


def _walk(value: Any, text: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {_walk(k, text): _walk(v, text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, text) for v in value]
    return value


def for_engine(value: Any) -> Any:
    """`value` (nested dicts, lists, strings) with every non-BMP character in the engine-safe form."""
    return _walk(value, lambda s: _ASTRAL.sub(_down, s) if not s.isascii() else s)


def restore(value: Any) -> Any:
    """What for_engine() was given."""
    return _walk(value, lambda s: _PAIR.sub(_up, s) if not s.isascii() else s)
