import signal
import time

import pytest

from tests.search.processes import (TRIALS, check_complete_search, completed, errors,
                                    read_log, read_trials, start)


@pytest.mark.slow
def test_killed_search_resumes_without_repeating(tmp_path):
    log = tmp_path / "log.jsonl"
    process = start(tmp_path, log, "--overwrite")
    try:
        deadline = time.time() + 120
        while len(completed(read_trials(tmp_path))) < 6:
            assert process.poll() is None, errors(process)
            assert time.time() < deadline, "the search did not reach 6 trials"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    before = completed(read_trials(tmp_path))
    assert 6 <= len(before) < TRIALS

    process = start(tmp_path, log, delay=0.0)
    process.wait(timeout=120)
    assert process.returncode == 0, errors(process)

    trials = read_trials(tmp_path)
    check_complete_search(trials)
    for trial_id, trial in before.items():  # finished trials kept as they were
        assert trials[trial_id] == trial
    runs = read_log(log)
    second = {r["trial_id"] for r in runs if r["pid"] != runs[0]["pid"]}
    assert not second & set(before)  # no finished trial ran again
    assert second | set(before) == set(trials)
