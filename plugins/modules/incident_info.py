#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: incident_info
short_description: Query the incident store - audit trail, outcomes and track record
version_added: 0.1.0
description:
  - Returns the audit trail (of one incident, or the newest events), and for
    each incident type of the catalog its track record, the outcomes of its
    runs and a verdict on its mode. A C(propose) type whose last
    O(promote_after) approved runs all verified is reported ready for
    C(auto) (changing the catalog stays a human's decision); an C(auto) type
    whose circuit breaker is open is reported demoted to C(propose).
  - Only reads.
author:
  - selfheal.core developers (@selfheal-core)
extends_documentation_fragment:
  - selfheal.core.attributes
  - selfheal.core.store
attributes:
  check_mode:
    support: full
    details: Reads only; the same in check mode.
  diff_mode:
    support: none
options:
  catalog:
    description: The catalog file; needed for the track record.
    type: path
  incident_id:
    description: Only this incident's audit trail.
    type: str
  limit:
    description: Most audit events and outcomes returned.
    type: int
    default: 200
  promote_after:
    description:
      - Verified approved runs in a row after which a C(propose) type is reported ready for C(auto).
      - Defaults to the catalog entry's C(promotion.after) (5 unless set).
    type: int
"""

EXAMPLES = r"""
- name: Report | the track record of every incident type
  selfheal.core.incident_info:
    store: /var/lib/selfheal/store.db
    catalog: /etc/selfheal/catalog.yml
  register: report
  delegate_to: localhost
"""

RETURN = r"""
audit:
  description: Audit events, oldest first.
  returned: always
  type: list
  elements: dict
track_record:
  description: Per incident type, its runs, outcomes and verdict (only with O(catalog)).
  returned: always
  type: list
  elements: dict
  sample:
    - incident_type: service_down
      mode: propose
      runs: 5
      outcomes: {verified: 5}
      ready_for_auto: true
      demoted: false
      verdict: "ready for auto: the last 5 approved runs all verified without rollback"
"""

import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.catalog import PolicyFileError, load_catalog
from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.store import STORE_ARGUMENT_SPEC, Store, StoreError


def _report(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    now = time.time()
    try:
        catalog = load_catalog(p["catalog"]) if p["catalog"] else None
        with Store(p["store"], password=p["store_password"]) as store:
            audit = store.audit_trail(p["incident_id"], limit=p["limit"])
            records = [store.track_record(itype.name, itype.policy, now, p["limit"], p["promote_after"])
                       for itype in (catalog.types if catalog else ())]
    except (PolicyFileError, StoreError) as exc:
        raise ModuleError(f"cannot read the incident store: {exc}") from exc
    return {"changed": False, "audit": audit, "track_record": records}


ARGUMENT_SPEC = {
    **STORE_ARGUMENT_SPEC,
    "catalog": {"type": "path"},
    "incident_id": {"type": "str"},
    "limit": {"type": "int", "default": 200},
    "promote_after": {"type": "int"},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _report)


if __name__ == "__main__":
    main()
