"""Unimodal auxiliary losses: one head per modality, trained on the labels next to the fusion.

A fusion model trained end to end can lean on its strongest modality and
leave the others' branches undertrained (modality imbalance): on av_digits a
GMU model trained with `ModalityDropout` scores well below an audio-only model
when the image is absent. Giving every modality its own small head, trained on
the same labels with the same loss, makes each branch learn to predict on its
own (the multi-task baseline of Wang et al., "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020). By default the heads only shape
training: the model's output is still the fused prediction. With
`fallback=True` (`build_fusion_model(..., unimodal_fallback=True)`) they also
stand in for the fused prediction where a modality is absent: a row with
every modality present gets the fused prediction, any other row the mean of
its present modalities' head predictions (late fusion over what is there), so
a missing modality costs no more than the remaining heads' own accuracy.

`build_fusion_model(..., unimodal_loss=w)` builds them: a `UnimodalHeads`
layer takes the fused prediction and every modality's head output and returns
the fused prediction (or, with `fallback`, the heads' mean on rows missing a
modality), and the returned model is a
`UnimodalLossModel`, whose `compute_loss` adds, in training,

    w * sum_m  loss(y, p_m, sample_weight * present_m)

to the compiled loss, where `loss` is the model's compiled loss, `p_m` the
prediction of modality `m`'s head and `present_m` its presence column (rows
where a modality is absent, in the data or dropped by `ModalityDropout`, add
nothing to its head's loss). Each term is averaged over the whole batch, as
Keras's default `"sum_over_batch_size"` reduction does. Validation and
evaluation losses are the fused prediction's loss alone, comparable with a
model without the heads.
"""

import keras
from keras import ops

__all__ = ["UnimodalHeads", "UnimodalLossModel"]


@keras.saving.register_keras_serializable(package="mmfusion")
class UnimodalHeads(keras.layers.Layer):
    """Passes the fused prediction through and keeps each modality's head
    prediction for the unimodal losses of `UnimodalLossModel`.

    Args:
        modalities: the modalities of the heads, in the order of the
            `unimodal` call argument.
        loss_weight: weight `w` of the sum of the unimodal losses.
        columns: each head's modality column in the presence mask (default:
            `0, 1, ...`).
        fallback: if True, rows where a modality is absent get the mean of
            the present modalities' head predictions instead of `fused`.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        fused: the model's (fused) prediction.
        unimodal: list of the modalities' head predictions, shaped like `fused`.
        presence: optional `(batch, N)` 0/1 presence mask; without it every
            modality counts as present.

    Returns:
        `fused` (with `fallback`, rows missing a modality replaced by the
        mean of their present heads' predictions). The last call's head
        predictions and presence weights are in `predictions` and
        `weights_by_modality` (read by `UnimodalLossModel.compute_loss`
        within the same training step).

    Example:

    >>> import numpy as np
    >>> layer = UnimodalHeads(["a", "b"], loss_weight=0.5)
    >>> fused = np.array([[0.5, 0.5]])
    >>> out = layer(fused, unimodal=[np.array([[0.75, 0.25]]), np.array([[0.25, 0.75]])],
    ...             presence=np.array([[1.0, 0.0]]))
    >>> out.numpy().tolist(), [float(w[0, 0]) for w in layer.weights_by_modality]
    ([[0.5, 0.5]], [1.0, 0.0])
    >>> layer = UnimodalHeads(["a", "b"], fallback=True)
    >>> layer(np.array([[0.5, 0.5], [0.5, 0.5]]),
    ...       unimodal=[np.array([[0.75, 0.25]] * 2), np.array([[0.25, 0.75]] * 2)],
    ...       presence=np.array([[1.0, 1.0], [1.0, 0.0]])).numpy().tolist()
    [[0.5, 0.5], [0.75, 0.25]]
    """

    def __init__(self, modalities, loss_weight=1.0, columns=None, fallback=False, **kwargs):
        super().__init__(**kwargs)
        self.modalities = list(modalities)
        self.loss_weight = float(loss_weight)
        self.fallback = bool(fallback)
        self.columns = list(range(len(self.modalities))) if columns is None else list(columns)
        if self.loss_weight <= 0:
            raise ValueError(f"UnimodalHeads '{self.name}': loss_weight must be > 0; "
                             f"received {loss_weight}.")
        if len(self.columns) != len(self.modalities):
            raise ValueError(f"UnimodalHeads '{self.name}': {len(self.modalities)} modalities "
                             f"but {len(self.columns)} presence columns.")
        self.predictions = []
        self.weights_by_modality = []

    def call(self, fused, unimodal, presence=None):
        if len(unimodal) != len(self.modalities):
            raise ValueError(f"UnimodalHeads '{self.name}': expected one head prediction per "
                             f"modality {self.modalities}; received {len(unimodal)}.")
        for m, p in zip(self.modalities, unimodal):
            if tuple(p.shape[1:]) != tuple(fused.shape[1:]):
                raise ValueError(f"UnimodalHeads '{self.name}': the head of modality '{m}' "
                                 f"predicts shape {tuple(p.shape)}; expected the fused "
                                 f"prediction's (batch,) + {tuple(fused.shape[1:])}.")
        self.predictions = [ops.cast(p, "float32") for p in unimodal]
        if presence is None:
            ones = ops.ones_like(ops.cast(fused[:, :1], "float32"))
            self.weights_by_modality = [ones for _ in self.modalities]
        else:
            presence = ops.cast(presence, "float32")
            self.weights_by_modality = [presence[:, c:c + 1] for c in self.columns]
            if self.fallback:
                return self._fall_back(fused)
        return fused

    def _fall_back(self, fused):
        """`fused` where every head's modality is present, else the mean of
        the present heads' predictions."""
        trailing = (1,) * (len(fused.shape) - 2)
        weights = [ops.reshape(w, (-1, 1) + trailing) for w in self.weights_by_modality]
        count = sum(weights)
        mean = sum(w * p for w, p in zip(weights, self.predictions)) / ops.maximum(count, 1.0)
        every_present = count >= float(len(weights))
        return ops.where(every_present, fused, ops.cast(mean, fused.dtype))

    def compute_output_shape(self, fused_shape, unimodal_shape=None, presence_shape=None):
        return fused_shape

    def get_config(self):
        config = super().get_config()
        config.update(modalities=self.modalities, loss_weight=self.loss_weight,
                      columns=self.columns, fallback=self.fallback)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class UnimodalLossModel(keras.Model):
    """A functional model whose training loss adds its `UnimodalHeads` losses.

    Built by `mmfusion.compose.build_fusion_model(..., unimodal_loss=w)`;
    construct it like `keras.Model(inputs, outputs)` around a graph holding
    one `UnimodalHeads` layer. Compile it with one loss for its one output (a
    name, a function or a `keras.losses.Loss`): the heads are trained with the
    same loss. In training the loss is the compiled loss plus
    `loss_weight * sum_m loss(y, p_m, sample_weight * present_m)` (see the
    module docstring); in evaluation, the compiled loss alone.

    Example:

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.compose import build_fusion_model
    >>> branches = {"a": tabular_mlp(3, units=(4,), name="a"),
    ...             "b": tabular_mlp(2, units=(4,), name="b")}
    >>> model = build_fusion_model(branches, "concat", num_outputs=2, unimodal_loss=0.5)
    >>> type(model).__name__
    'UnimodalLossModel'
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> x = {"a": np.ones((4, 3)), "b": np.ones((4, 2))}
    >>> model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0).history["loss"][0] > 0
    True
    """

    def unimodal_heads(self):
        """The model's `UnimodalHeads` layer."""
        found = [layer for layer in self.layers if isinstance(layer, UnimodalHeads)]
        if len(found) != 1:
            raise ValueError(f"UnimodalLossModel '{self.name}': expected one UnimodalHeads "
                             f"layer; found {len(found)}.")
        return found[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight=sample_weight, training=training)
        if not training:
            return loss
        heads = self.unimodal_heads()
        loss_fn = self._single_loss()
        for p, present in zip(heads.predictions, heads.weights_by_modality):
            weight = present[:, 0]
            if sample_weight is not None:
                weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            values = ops.cast(loss_fn(y, p), "float32")
            values = ops.reshape(values, (ops.shape(values)[0], -1))
            loss = loss + heads.loss_weight * ops.mean(ops.mean(values, axis=1) * weight)
        return loss

    def _single_loss(self):
        """Per-example values of the compiled loss, as a function `(y, p) -> (batch, ...)`."""
        if self.loss is None or isinstance(self.loss, (dict, list, tuple)):
            raise ValueError(f"UnimodalLossModel '{self.name}': compile the model with one loss "
                             f"(a name, a function or a keras.losses.Loss) for its unimodal "
                             f"heads; received {self.loss!r}.")
        loss = keras.losses.get(self.loss)
        return loss.call if isinstance(loss, keras.losses.Loss) else loss
