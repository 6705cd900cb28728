"""Name registry of fusion layers: `get("gmu", units=64)`, `available()`."""

import keras

__all__ = ["available", "get", "get_class", "register"]

_REGISTRY = {}


def register(name):
    """Class decorator: registers a `FusionLayer` under `name` and with Keras.

    The class becomes serializable as `mmfusion>ClassName` (so `.keras` files
    reload it) and retrievable by `mmfusion.fusion.get(name, ...)`.

    Args:
        name: short lowercase name, e.g. `"gmu"`. Must be unique.

    Returns:
        The decorator.

    Example:

    >>> from keras import ops
    >>> from mmfusion.fusion.base import FusionLayer
    >>> @register("doc_elementwise_max")
    ... class ElementwiseMax(FusionLayer):
    ...     def fuse(self, inputs, presence, training=None):
    ...         return ops.max(ops.stack(inputs, axis=1), axis=1), {}
    >>> layer = get("doc_elementwise_max", name="max_fusion")
    >>> type(layer).__name__, "doc_elementwise_max" in available()
    ('ElementwiseMax', True)
    >>> keras.saving.get_registered_name(ElementwiseMax)
    'mmfusion>ElementwiseMax'
    >>> _ = _REGISTRY.pop("doc_elementwise_max")  # leaves the registry as it was
    """

    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"Fusion layer name '{name}' is already registered "
                f"to {_REGISTRY[name].__name__}."
            )
        cls = keras.saving.register_keras_serializable(package="mmfusion")(cls)
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available(input_rank=None, n_modalities=None):
    """Sorted names of the registered fusion layers.

    Args:
        input_rank: optional filter: `2` for layers over vectors
            `(batch, d)`, `3` for layers over sequences `(batch, T, d)`.
        n_modalities: optional filter: only layers that take this many
            modalities (`FusionLayer.accepts`).

    Returns:
        A sorted list of names.

    Example:

    >>> "gmu" in available(), "co_attention" in available(), "co_attention" in available(2)
    (True, True, False)
    >>> "mutan" in available(n_modalities=3), "gmu" in available(n_modalities=3)
    (False, True)
    """
    return sorted(
        name
        for name, cls in _REGISTRY.items()
        if (input_rank is None or cls.input_rank == input_rank)
        and (n_modalities is None or cls.accepts(n_modalities))
    )


def get_class(name):
    """The registered class for `name`; `ValueError` listing names if unknown.

    Example:

    >>> cls = get_class("gmu")
    >>> cls.__name__, cls.registry_name, cls.input_rank, cls.max_modalities
    ('GMU', 'gmu', 2, None)
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown fusion layer '{name}'. Available: {', '.join(available())}."
        )
    return _REGISTRY[name]


def get(identifier, **kwargs):
    """A fusion layer from a registered name, or the layer itself.

    Args:
        identifier: a registered name (see `available()`) or a `FusionLayer`
            instance, which is returned unchanged (then `kwargs` must be empty).
        **kwargs: constructor arguments of the layer.

    Returns:
        A `FusionLayer` instance.

    Example:

    >>> layer = get("gmu", units=8)
    >>> type(layer).__name__
    'GMU'
    """
    if isinstance(identifier, keras.layers.Layer):
        if kwargs:
            raise ValueError(
                "get() received a layer instance and constructor arguments "
                f"{sorted(kwargs)}; pass one or the other."
            )
        return identifier
    return get_class(identifier)(**kwargs)
