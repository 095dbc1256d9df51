"""Modules that are also the API's functions: `decentral.run(...)`, `decentral.sweep(...)`,
`decentral.theory(...)`.

`decentral.run`, `decentral.sweep` and `decentral.theory` are modules (the run job, the sweep
package, the theory package), so the package attribute of that name is the module once anything
imports it. Rather than shadow them, each module is made callable: calling it calls the function
of the same name in `decentral.api` (imported on first call), and its attributes stay as they
are (`decentral.run.execute`, `decentral.sweep.config`, `decentral.theory.TheoryConfig`).
"""

from __future__ import annotations

import importlib
import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        api = importlib.import_module("decentral.api")
        return getattr(api, self.__api_name__)(*args, **kwargs)


def make_callable(module_name: str, api_name: str) -> None:
    """Let module `module_name` be called as `decentral.api.<api_name>`."""
    module = sys.modules[module_name]
    module.__api_name__ = api_name
    module.__class__ = _CallableModule
