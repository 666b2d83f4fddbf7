"""The tree's metrics folder, set up before prometheus_client is imported anywhere.

prometheus_client picks in-process or multiprocess values when it is first imported, from
PROMETHEUS_MULTIPROC_DIR: so this module must not import it (pipeline/metrics.py does).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("supervisor")


def prepare(database_path: Path) -> Path | None:
    """The tree's metrics folder, emptied of an earlier run's metric files, and named in the
    environment the stages inherit: PROMETHEUS_MULTIPROC_DIR when set (only its `*.db` files
    are removed), else `<database>.metrics` beside the database, else
    (that place is not writable) a fresh folder in the system's temporary directory.

    Call before the first stage starts and before this process imports pipeline.metrics.
    None when no folder could be made: each process then counts alone, and the reason is
    logged (the stage that cannot open the database says so itself, and stops the tree).
    """
    named = os.environ.get(ENV)
    folder = Path(named or database_path.with_name(database_path.name + ".metrics"))
    try:
        if named:  # the operator's folder: only the metric files of an earlier run go
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.db"):
                old.unlink()
        else:
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
    except OSError as problem:
        try:
            folder = Path(tempfile.mkdtemp(prefix="ses-sender-metrics-"))
        except OSError:
            log.warning("no folder for the metrics (%s): each process counts alone", problem)
            os.environ.pop(ENV, None)
            return None
        log.warning("metrics in %s: %s", folder, problem)
    os.environ[ENV] = str(folder)
    return folder
