import os

import keras
import pytest

from mmfusion.cli import main


@pytest.mark.slow
def test_search_command_prints_and_exports_best(tmp_path, capsys):
    main(["search", "synthetic", "--trials", "2", "--epochs", "1", "--pretrain-epochs", "1",
          "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("trial ") == 2
    assert "best architecture: " in out and "(visual." in out and "textual." in out
    model = keras.models.load_model(os.path.join(tmp_path, "best_mfas.keras"))
    assert sorted(t.name for t in model.inputs) == ["textual", "visual"]
    # Resuming a finished search runs no new trial.
    main(["search", "synthetic", "--trials", "2", "--epochs", "1", "--pretrain-epochs", "1",
          "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    assert capsys.readouterr().out.count("trial ") == 0
    # Resuming with other settings is a usage error, not a traceback.
    with pytest.raises(SystemExit) as stopped:
        main(["search", "synthetic", "--trials", "3", "--epochs", "1", "--pretrain-epochs", "1",
              "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    assert stopped.value.code == 2
    assert "started with other settings: trials=3 (it has 2)" in capsys.readouterr().err
