import socket

import pytest

from tests.search.processes import (TRIALS, check_complete_search, errors, read_log,
                                    read_trials, start)

pytest.importorskip("grpc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    log = tmp_path / "log.jsonl"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    chief = start(tmp_path, log, "--overwrite", env={**env, "KERASTUNER_TUNER_ID": "chief"},
                  delay=0.1)
    workers = [start(tmp_path, log, env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"}, delay=0.1)
               for i in range(2)]
    processes = [chief] + workers
    try:
        for process in workers + [chief]:
            process.wait(timeout=150)
            assert process.returncode == 0, errors(process)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    runs = read_log(log)
    ran = [r["trial_id"] for r in runs]
    assert sorted(ran) == [f"{i:02d}" for i in range(TRIALS)]  # each exactly once
    assert {r["tuner_id"] for r in runs} == {"tuner0", "tuner1"}
    check_complete_search(read_trials(tmp_path))  # results reached the chief
