# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter restore_text: an event as the source saw it, emoji and all (see module_utils/engine_text.py)."""
from __future__ import annotations

from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.engine_text import restore

DOCUMENTATION = r"""
name: restore_text
short_description: Restore the text of an event that went through the rule engine
version_added: 0.2.0
description:
  - selfheal.core event sources hand the rule engine only characters of the Basic Multilingual Plane,
    since it cannot carry others (emoji come back broken and the playbook would not start); characters
    beyond it travel as pairs of Private Use characters. This filter turns them back.
  - Apply it once where a playbook reads C(ansible_eda.event); anything else passes unchanged.
positional: _input
options:
  _input:
    description: The event, or any data.
    type: raw
    required: true
author:
  - selfheal.core developers (@selfheal-core)
"""

EXAMPLES = r"""
- name: The event as the source saw it
  ansible.builtin.set_fact:
    event: "{{ ansible_eda.event | selfheal.core.restore_text }}"
"""

RETURN = r"""
_value:
  description: The same data with every non-BMP character restored.
  type: raw
"""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"restore_text": restore}
