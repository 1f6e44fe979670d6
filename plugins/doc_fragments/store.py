# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """Options of the modules that use the incident store."""

    DOCUMENTATION = r"""
options:
  store:
    description:
      - The store, a SQLite file path or a C(postgresql://user@host/db) URL without a password.
      - Empty, the local store of the user the module runs as on the controller,
        C($XDG_STATE_HOME/selfheal/store.db) (by default C(~/.local/state/selfheal/store.db)), so by
        hand the guard is never skipped for want of a store.
    type: str
    default: ""
  store_password:
    description:
      - Password of a PostgreSQL store.
    type: str
"""
