"""Shared test set-up: import the collection as Ansible does, from ansible_collections/."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".build" / "collections"

if not (COLLECTIONS / "ansible_collections" / "selfheal" / "core").exists():
    raise RuntimeError(f"{COLLECTIONS}/ansible_collections/selfheal/core is missing: run `make collection` "
                       "(make test does it) so the tests import the collection as Ansible does")
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(REPO / "lab"))
