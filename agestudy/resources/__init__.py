"""Files that ship with the package: the Optuna studies and the report's templates.

In the source tree they live at the top (``studies/``, ``report_templates/``, where users read
and edit them); pyproject.toml maps them into this package, so an installed wheel carries
them too. Code reaches them only through ``resource_dir``.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[2]


def resource_dir(name: str) -> Path:
    """The folder ``name`` ("studies" or "report_templates") on disk: the copy an installed wheel
    holds beside this file, else (an editable install, or code run from a checkout) the source
    tree's top-level folder.

    (Not importlib.resources.files: these folders have no __init__.py, and for such namespace
    packages it returns a MultiplexedPath, not a folder one can glob.)
    """
    installed = Path(__file__).resolve().parent / name
    return installed if installed.is_dir() else SOURCE_TREE / name
