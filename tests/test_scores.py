import torch

from emp_hf.core import BYTES_PER_EXAMPLE, ScoreStore


def test_state_dict_round_trip_is_exact():
    a = ScoreStore(50)
    g = torch.Generator().manual_seed(0)
    for epoch in range(3):
        idx = torch.randperm(50, generator=g)[:30]
        a.update(idx, torch.rand(30, generator=g), torch.rand(30, generator=g), epoch=epoch)
    a.update(torch.tensor([1]), torch.tensor([float("nan")]))
    b = ScoreStore(50)
    b.load_state_dict(a.state_dict())
    for name, value in a.state_dict().items():
        other = b.state_dict()[name]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    assert b.nonfinite_count == 1


def test_duplicate_indices_keep_the_last_row():
    s = ScoreStore(3)
    s.update(torch.tensor([2, 0, 2]), torch.tensor([1.0, 5.0, 3.0]))
    assert s.loss.tolist() == [5.0, 0.0, 3.0]
    assert s.times_trained.tolist() == [1, 0, 1]


def test_counters_and_memory_budget():
    s = ScoreStore(4)
    s.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), epoch=2)
    assert s.last_epoch.tolist() == [2, 2, -1, -1]
    assert s.seen.tolist() == [True, True, False, False]
    per_example = sum(t.element_size() for t in (s.loss, s.entropy, s.ema, s.ema_var,
                                                  s.times_trained, s.times_selected, s.last_epoch))
    assert per_example == BYTES_PER_EXAMPLE == 28  # 10^8 examples: 2.8 GB


def test_inputs_on_any_device_and_dtype_are_accepted():
    s = ScoreStore(3)
    s.update([0, 1], torch.tensor([1.0, 2.0], dtype=torch.float16), torch.tensor([0.1, 0.2], dtype=torch.bfloat16))
    assert s.loss.dtype == torch.float32 and s.loss[1].item() == 2.0
