"""Regularizers against NumPy, and in training, on whichever `KERAS_BACKEND` is set."""

import keras
import numpy as np
import pytest

from workbench.regularizers import L2SP
from workbench.regularizers import GroupLasso

RNG = np.random.default_rng(0)


def gradient(penalty, w):
    """d penalty / d w at `w`, with the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(w)
        with tf.GradientTape() as tape:
            value = penalty(variable)
        return tape.gradient(value, variable).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(penalty)(jax.numpy.asarray(w)))
    import torch

    tensor = torch.tensor(w, requires_grad=True)
    penalty(tensor).backward()
    return tensor.grad.numpy()


@pytest.mark.parametrize("shape", [(5, 4), (3, 3, 2, 4), (7,)])
def test_group_lasso_value_matches_numpy(shape):
    w = RNG.normal(size=shape).astype("float32")
    w[..., 1] = 0.0  # an already-pruned unit contributes nothing
    if len(shape) > 1:
        groups = w.reshape(-1, shape[-1])
        expected = 0.3 * np.sqrt((groups**2).sum(axis=0)).sum()
    else:
        expected = 0.3 * np.abs(w).sum()
    assert float(GroupLasso(0.3)(w)) == pytest.approx(expected, rel=1e-5)


def test_group_lasso_gradient_is_unit_direction_and_zero_on_empty_groups():
    grad = gradient(GroupLasso(0.5), np.array([[3.0, 0.0], [4.0, 0.0]], "float32"))
    np.testing.assert_allclose(grad, [[0.5 * 0.6, 0.0], [0.5 * 0.8, 0.0]])


def test_group_lasso_zeroes_weak_units_and_soft_thresholds_the_rest():
    # Identity inputs make the kernel W the prediction, so the training
    # objective is mean((W - A)**2) + s * sum_j ||W_j||, whose minimizer is
    # group soft-thresholding: W_j = A_j * max(0, 1 - s * n * m / (2 ||A_j||)).
    n, m, strength = 4, 6, 0.02
    directions = RNG.normal(size=(n, m))
    directions /= np.linalg.norm(directions, axis=0)
    norms = np.array([0.1, 0.15, 0.2, 1.0, 2.0, 3.0])
    target = (directions * norms).astype("float32")
    expected = target * np.maximum(0.0, 1 - strength * n * m / (2 * norms))
    assert (expected[:, :3] == 0).all() and (expected[:, 3:] != 0).all()

    model = keras.Sequential([
        keras.Input((n,)),
        keras.layers.Dense(m, use_bias=False, kernel_initializer="ones",
                           kernel_regularizer=GroupLasso(strength)),
    ])
    steps = 400
    # A decaying rate lets the zero groups settle instead of oscillating
    # at the learning_rate * strength scale.
    lr = keras.optimizers.schedules.PolynomialDecay(1.0, steps, 0.01)
    model.compile(keras.optimizers.SGD(lr), loss="mse")
    x = np.tile(np.eye(n, dtype="float32"), (steps, 1))
    y = np.tile(target, (steps, 1))
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)

    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    unit_norms = np.linalg.norm(kernel, axis=0)
    assert unit_norms[:3].max() < 0.01, unit_norms
    np.testing.assert_allclose(kernel[:, 3:], expected[:, 3:], atol=0.01)


def test_group_lasso_config_round_trip():
    regularizer = GroupLasso(0.125)
    restored = keras.regularizers.deserialize(
        keras.regularizers.serialize(regularizer)
    )
    assert isinstance(restored, GroupLasso)
    assert restored.get_config() == {"strength": 0.125}


def test_regularizers_reject_negative_strength():
    with pytest.raises(ValueError, match="strength"):
        GroupLasso(-1.0)
    with pytest.raises(ValueError, match="strength"):
        L2SP(-1.0)


def test_l2sp_value_matches_numpy():
    reference = RNG.normal(size=(3, 5)).astype("float32")
    w = RNG.normal(size=(3, 5)).astype("float32")
    expected = 0.7 * ((w - reference) ** 2).sum()
    assert float(L2SP(0.7, reference=reference)(w)) == pytest.approx(
        expected, rel=1e-5
    )


def _regression_data():
    x = RNG.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([[2.0], [-3.0], [1.0]]) + 5.0).astype("float32")
    return x, y


def _dense_model(regularizer):
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(1, kernel_regularizer=regularizer),
    ])
    model.compile(keras.optimizers.SGD(0.05), loss="mse")
    return model


def test_l2sp_anchors_to_the_weights_at_the_start_of_training(tmp_path):
    x, y = _regression_data()
    model = _dense_model(L2SP(10.0))
    # Weights "loaded from a checkpoint" after the layer was built.
    pretrained = np.array([[1.0], [1.0], [1.0]], dtype="float32")
    model.layers[0].kernel.assign(pretrained)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0)

    regularizer = model.layers[0].kernel_regularizer
    np.testing.assert_array_equal(regularizer.reference, pretrained)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert float(regularizer(kernel)) == pytest.approx(
        10.0 * ((kernel - pretrained) ** 2).sum(), rel=1e-5
    )

    # Without the anchor the kernel moves toward (2, -3, 1); with a strong
    # one it stays near the pretrained values.
    free = _dense_model(None)
    free.layers[0].kernel.assign(pretrained)
    free.fit(x, y, batch_size=16, epochs=5, verbose=0)
    drift = np.abs(kernel - pretrained).max()
    free_drift = np.abs(keras.ops.convert_to_numpy(free.layers[0].kernel) - pretrained).max()
    assert drift < 0.25 * free_drift

    # After save/load the anchor is still the pretrained weights, not the
    # fine-tuned ones the loaded model starts from.
    path = tmp_path / "l2sp.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(
        loaded.layers[0].kernel_regularizer.reference, pretrained
    )


def test_l2sp_config_round_trip_before_and_after_capture():
    regularizer = L2SP(0.25)
    assert keras.regularizers.deserialize(
        keras.regularizers.serialize(regularizer)
    ).get_config() == {"strength": 0.25, "reference": None}
    regularizer(np.ones((2, 2), dtype="float32"))
    restored = keras.regularizers.deserialize(
        keras.regularizers.serialize(regularizer)
    )
    assert restored.get_config() == {
        "strength": 0.25, "reference": [[1.0, 1.0], [1.0, 1.0]]
    }


def test_l2sp_refuses_to_anchor_two_weights():
    shared = L2SP(0.1)
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(3, kernel_regularizer=shared),
        keras.layers.Dense(3, kernel_regularizer=shared),
    ])
    with pytest.raises(ValueError, match="its own L2SP instance"):
        model.losses


def test_l2sp_rejects_reference_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        L2SP(0.1, reference=np.zeros((2, 3)))(np.zeros((3, 2)))
