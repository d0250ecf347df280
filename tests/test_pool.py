"""ImagePool: the official semantics, size 0, and an exact state round trip."""
import pytest
import torch

from cyclelib.pool import ImagePool


def batch(start, n=1):
    # images whose single value identifies them: [n, 1, 1, 1]
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)


def test_size_zero_returns_the_input_itself():
    pool = ImagePool(0)
    x = batch(0, 3)
    assert pool.query(x) is x


def test_fills_first_then_returns_new_or_stored_images():
    pool = ImagePool(4, seed=1)
    out = pool.query(batch(0, 4))
    assert torch.equal(out, batch(0, 4))  # filling: every image comes straight back
    assert len(pool.images) == 4
    returned_old = 0
    for i in range(4, 404):
        value = pool.query(batch(i)).item()
        stored = {im.item() for im in pool.images}
        if value != i:
            returned_old += 1
            assert value < i and i in stored  # an older image came back, the new one took its place
        assert len(pool.images) == 4
    assert 150 < returned_old < 250  # p = 0.5


def test_pool_is_detached():
    pool = ImagePool(2)
    x = torch.ones(2, 1, 2, 2, requires_grad=True)
    assert not pool.query(x * 2).requires_grad


def test_state_dict_round_trip_gives_the_same_future():
    a = ImagePool(3, seed=7)
    for i in range(10):
        a.query(batch(i))
    b = ImagePool(3, seed=0)
    b.load_state_dict(a.state_dict())
    outs_a = [a.query(batch(i)).item() for i in range(10, 40)]
    outs_b = [b.query(batch(i)).item() for i in range(10, 40)]
    assert outs_a == outs_b


def test_negative_size_and_mismatched_state_are_errors():
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(-1)
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(5).load_state_dict(ImagePool(3).state_dict())
