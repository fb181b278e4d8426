"""Files that ship with the package: the Optuna studies and the report's templates.

In the source tree they live at the top (``studies/``, ``report_templates/``, where users read
and edit them); pyproject.toml maps them into this package, so an installed wheel carries
them too. Code reaches them only through ``resource_dir``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[2]


def resource_dir(name: str) -> Path:
    """The folder of ``agestudy.resources.<name>`` ("studies" or "report_templates") on disk: the
    installed package's copy, else (code run straight from a checkout, e.g. PYTHONPATH=.) the
    source tree's top-level folder."""
    try:
        return Path(str(files(f"agestudy.resources.{name}")))
    except ModuleNotFoundError:
        return SOURCE_TREE / name
