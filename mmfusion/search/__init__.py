"""Fusion architecture search with KerasTuner (MFAS, Pérez-Rúa et al., CVPR 2019).

- `FusionSpace` (`space.py`): fusion architectures (taps, fusion types,
  activations, number of fusion layers) and their hyperparameter names.
- `MFASOracle` (`oracle.py`): sequential model-based search with a learned
  surrogate (`surrogate.py`) and temperature-scheduled sampling.
- `FusionHyperModel`, `FusionTuner`, `MFASTuner` (`hypermodel.py`): the
  search space over modality branches as a KerasTuner hypermodel, and tuners
  running it with any oracle (progress lines, crash-safe state).
- `baselines.py`: random search and Bayesian optimization with seeds that
  are seeds (0 included) and a budget-sized Bayesian start.
- `oneshot.py`: one-shot search (DARTS / BM-NAS style): `FusionSupernet`
  mixes every architecture of the space by softmax architecture weights,
  trained once on cached features; its argmax pick is retrained by an
  `ArchitectureOracle` (`run_search(..., oracle="oneshot")`).
- `objectives.py`: the loss, metrics and objectives of each head
  (classification, multilabel, regression); `presence.py`: objectives
  averaged over presence patterns; `costs.py`: each trial's parameters and
  latency, and Pareto fronts of objective vs cost.
- `state.py`: atomic writes and validated reads of every search file.
- `features.py`: frozen, pretrained branches whose tap outputs are cached on
  disk, so each trial only trains the fusion network (as MFAS does).
- `run.py`: a whole search on a named task (what `mmfusion search` runs).

Distributed search (KerasTuner's chief / worker mode, over gRPC): start the
same script on every machine, with the same `directory` and `project_name`
on a shared file system (or at least the same on the chief), and these
environment variables:

    # machine A, the chief: holds the MFASOracle, runs no trial
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 \\
        KERASTUNER_ORACLE_PORT=8000 python my_search.py
    # machines B, C, ...: one worker each (or several per machine)
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 \\
        KERASTUNER_ORACLE_PORT=8000 python my_search.py

`KERASTUNER_ORACLE_IP` is the address the chief listens on and the workers
connect to (reachable from every worker; the port open between them; the
traffic is not encrypted: use a private network). Every worker needs a
distinct `KERASTUNER_TUNER_ID`; the chief's contains `"chief"`. Workers ask
the chief for trials, run them and send back their metrics; the chief
records every result and stops once `max_trials` trials have ended. An MFAS
step waits for all its trials: a worker asking meanwhile is told `"IDLE"`
and its `FusionTuner` asks again after `poll_interval` seconds. A restarted
chief resumes from its `oracle.json` (`overwrite=False`); a trial whose
worker died is run again when the chief restarts. With cached features
(`mmfusion.search.run.prepare`), copy the `prepared/` folder to every worker
(or let each compute it once with the same seed and settings: its folder is
keyed by them).
"""

from mmfusion.search.hypermodel import FusionHyperModel, FusionTuner, MFASTuner
from mmfusion.search.oracle import MFASOracle
from mmfusion.search.space import FusionSpace

__all__ = ["FusionHyperModel", "FusionSpace", "FusionTuner", "MFASOracle", "MFASTuner"]
