"""Kills fake MFAS searches at random moments, then lets each complete.

Usage: python -m tests.search.kill_server RESULT_JSON TRIALS KILLS SEED DIRECTORY...

Importing KerasTuner (and TensorFlow) takes seconds, so this process imports
once and forks one child per run (it never runs a TensorFlow op itself, so
the children start clean). Cycle `i` forks a child resuming the search in
`DIRECTORY[i % n]` and SIGKILLs it after a random delay (seeded); then one
child per directory (side by side) runs its search to the end. The result
file records how many children were killed while running, the exit codes of
the last ones and the seconds of both phases.
"""

import json
import os
import random
import signal
import sys
import time
import traceback

from tests.search.fake import FakeTuner


def run(directory, trials, overwrite):
    """Child: the fake search in `directory` (its log: `directory/log.jsonl`)."""
    try:
        tuner = FakeTuner(log=os.path.join(directory, "log.jsonl"), delay=0.02,
                          max_trials=trials, seed=1, directory=directory, project_name="fake",
                          overwrite=overwrite)
        tuner.search(verbose=0)
        code = 0
    except BaseException:
        with open(os.path.join(directory, f"error-{os.getpid()}.txt"), "w") as f:
            f.write(traceback.format_exc())
        code = 1
    os._exit(code)


def fork(directory, trials, overwrite):
    pid = os.fork()
    if pid == 0:
        run(directory, trials, overwrite)
    return pid


def main(argv):
    result, trials, kills, seed, *directories = argv
    trials, kills = int(trials), int(kills)
    rng = random.Random(int(seed))
    started, killed, finished_early = set(), 0, 0
    begin = time.perf_counter()
    for cycle in range(kills):
        directory = directories[cycle % len(directories)]
        pid = fork(directory, trials, overwrite=directory not in started)
        started.add(directory)
        time.sleep(rng.uniform(0.0, 1.5))
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed += 1
        else:
            finished_early += 1
    killing = time.perf_counter() - begin
    pids = [fork(directory, trials, overwrite=False) for directory in directories]
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    with open(result, "w") as f:
        json.dump({"killed": killed, "finished_early": finished_early, "codes": codes,
                   "seconds_killing": killing,
                   "seconds_completing": time.perf_counter() - begin - killing}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
