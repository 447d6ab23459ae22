"""How every stage script ends: bad input is one line on stderr and exit code 2.

Input that breaks the contract (:class:`~graphqa.contract.DataContractError`) or the typed
params (:class:`~graphqa.config.ConfigError`) is the user's to fix, so the user gets the file,
the key and what was expected, not a traceback; DVC then keeps the last good ``dvc.lock``.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from graphqa.config import ConfigError
from graphqa.contract import DataContractError


def run_stage(main: Callable[[], object], name: str) -> None:
    """Call a stage's ``main()``; on bad input print ``<name>: error: <why>`` and exit 2."""
    try:
        main()
    except (ConfigError, DataContractError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
