"""`remat=true`: each Transformer block recomputed in the backward pass (workbench.lm.remat) gives
the same training as without it, in the compiled `fit` step."""

import numpy as np


def _train(remat):
    import keras

    from workbench.lm.model import build_gpt
    from workbench.lm.remat import rematerialize_blocks

    keras.utils.set_random_seed(0)
    model = build_gpt(vocabulary_size=64, context=16, layers=2, heads=2, width=32, dropout=0.0)
    wrapped = rematerialize_blocks(model) if remat else 0
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    ids = np.random.default_rng(0).integers(0, 64, (8, 17)).astype("int32")
    history = model.fit(ids[:, :-1], ids[:, 1:], epochs=4, batch_size=8, verbose=0,
                        shuffle=False)
    return wrapped, history.history["loss"]


def test_rematerialized_blocks_train_exactly_as_the_plain_ones():
    plain_count, plain = _train(False)
    remat_count, remat = _train(True)
    assert plain_count == 0 and remat_count == 2
    assert plain[-1] < plain[0]  # it does train
    np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-6)
