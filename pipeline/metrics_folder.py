"""The tree's metrics folder, set up before prometheus_client is imported anywhere.

prometheus_client picks in-process or multiprocess values when it is first imported, from
PROMETHEUS_MULTIPROC_DIR: so this module must not import it (pipeline/metrics.py does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def prepare(database_path: Path) -> Path:
    """The tree's metrics folder, emptied, and named in the environment the stages inherit:
    PROMETHEUS_MULTIPROC_DIR when set, else `<database>.metrics` beside the database.

    Call before the first stage starts and before this process imports pipeline.metrics.
    """
    folder = Path(os.environ.get(ENV) or database_path.with_name(database_path.name + ".metrics"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ[ENV] = str(folder)
    return folder
