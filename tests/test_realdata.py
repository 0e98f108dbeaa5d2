"""Training on the real Fashion-MNIST: the library does its job end to end."""

import numpy as np
import pytest

import fastsoftmax as fs


@pytest.mark.realdata
def test_few_epochs_reach_84_percent(real_data):
    result = fs.train(real_data.train_images, real_data.train_labels, hidden_size=40,
                      batch_size=64, learning_rate=0.1, epochs=5, alpha=1e-4, seed=0)
    assert not result.diverged
    loss, accuracy = fs.evaluate(result.params, real_data.test_images, real_data.test_labels)
    assert accuracy >= 0.84, accuracy
    assert np.isfinite(loss)
