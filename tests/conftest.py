import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture
def core_sizes(monkeypatch):
    """Set one of the core's size switches in every module that reads it (`tiny.set_core_size`)."""
    from tiny import set_core_size

    return lambda name, value: set_core_size(monkeypatch, name, value)


@pytest.fixture
def trainer_factory(tmp_path):
    """`make_trainer` bound to the test's folder: `trainer_factory(pruning=..., num_train_epochs=3)`."""
    from tiny import make_trainer

    return lambda **kwargs: make_trainer(tmp_path, **kwargs)
