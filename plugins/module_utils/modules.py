# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way a selfheal.core module runs: parse arguments, do the work, one error path."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule


class ModuleError(Exception):
    """Why a module could not do its work; the task fails with this message (and `result`, what the module
    found on the way, such as a probe's attempts) and nothing else is done."""

    def __init__(self, message: str, **result: Any) -> None:
        super().__init__(message)
        self.result = result


def run_module(argument_spec: dict[str, Any], work: Callable[[dict[str, Any], bool], dict[str, Any]],
               **constraints: Any) -> None:
    """Run `work(params, check_mode)`, which returns the result or raises ModuleError. `constraints` are
    AnsibleModule's argument constraints (required_if, mutually_exclusive, required_together, ...)."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **constraints)
    try:
        result = work(module.params, module.check_mode)
    except ModuleError as exc:
        module.fail_json(msg=str(exc), **exc.result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)
