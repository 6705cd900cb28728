"""Runs a fake-objective MFAS search (for the kill-and-resume and distributed tests).

Usage: python -m tests.search.run_fake_search DIRECTORY MAX_TRIALS DELAY LOG [--overwrite]
In chief/worker mode the KERASTUNER_* environment variables select the role.
"""

import sys

from tests.search.fake import FakeTuner


def main(argv):
    directory, max_trials, delay, log = argv[:4]
    tuner = FakeTuner(log=log, delay=float(delay), max_trials=int(max_trials), seed=1,
                      directory=directory, project_name="fake",
                      overwrite="--overwrite" in argv)
    tuner.search(verbose=0)


if __name__ == "__main__":
    main(sys.argv[1:])
