"""Shared fixtures: the folder of real datasets.

CI clones the repository next to a `shared/` folder, so real data (FSDD) is
in `../shared/data/` relative to the repository; `MMFUSION_DATA` overrides it.
Tests that need real data take the `data_dir` fixture and are skipped when
there is none; the library's own default (`$MMFUSION_DATA`, then a download)
is set here for the notebooks, which run in their own kernels.
"""

import os
from pathlib import Path

import pytest

from mmfusion.datasets.fsdd import DATA_ENV

REPOSITORY = Path(__file__).resolve().parents[1]


def _shared_data():
    folder = os.environ.get(DATA_ENV) or str(REPOSITORY.parent / "shared" / "data")
    return folder if os.path.isdir(os.path.join(folder, "fsdd")) else None


@pytest.fixture(scope="session")
def data_dir():
    """The folder of real datasets (holding `fsdd/`); skips the test if absent."""
    folder = _shared_data()
    if folder is None:
        pytest.skip(f"no real data: neither ${DATA_ENV} nor ../shared/data holds fsdd/")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _data_env():
    """Points `$MMFUSION_DATA` at the real data (if any) for subprocesses and notebooks."""
    folder = _shared_data()
    previous = os.environ.get(DATA_ENV)
    if folder is not None:
        os.environ[DATA_ENV] = folder
    yield
    if previous is None:
        os.environ.pop(DATA_ENV, None)
