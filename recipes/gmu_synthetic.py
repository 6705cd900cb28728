"""The GMU paper's synthetic task: two vector modalities, a hidden switch
decides which one carries the class.

    python -m recipes.gmu_synthetic --fusion gmu --epochs 30
"""

import keras
import numpy as np

from mmfusion.branches import tabular_mlp
from mmfusion.compose import build_fusion_model
from mmfusion.datasets.pipelines import make_dataset
from mmfusion.datasets.synthetic import MODALITIES, load_gmu_synthetic
from recipes import base_parser, train_and_report

NAME = "gmu_synthetic"


def main(argv=None):
    """Trains and evaluates a fusion model on the synthetic task; returns the metrics."""
    parser = base_parser(NAME, __doc__, fusion="gmu", epochs=30)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    train, test = load_gmu_synthetic(args.n_train, args.n_test, seed=args.seed, dim=args.dim)
    branches = {m: tabular_mlp(args.dim, units=(16,), name=m) for m in MODALITIES}
    model = build_fusion_model(branches, args.fusion, num_outputs=2, units=args.units,
                               placement=args.placement, head_units=(16,))

    def by_switch(predicted):
        correct = predicted == test.labels
        return {"test_accuracy_by_switch": {
            f"{m}_carries_signal": float(np.mean(correct[test.switch == s]))
            for m, s in (("visual", 1), ("textual", 0))}}

    return train_and_report(
        NAME, model,
        make_dataset(train.inputs, train.labels, args.batch_size, shuffle=True, seed=args.seed),
        make_dataset(test.inputs, test.labels, 256), args, extra=by_switch)


if __name__ == "__main__":
    main()
