"""weakseg.filtering._work_pool: kept arrays, the budget, tensors on pooled memory."""

from __future__ import annotations

import gc

import numpy as np
import torch

from weakseg.filtering._work_pool import WorkPool


def test_pool_hands_back_kept_arrays_and_respects_its_budget() -> None:
    pool = WorkPool(max_bytes=3 << 20, min_bytes=1 << 20)
    big = np.ones((1 << 18,), np.float32)  # 1 MB
    pool.give(big, np.ones(10, np.float32))  # the small one is not kept
    assert pool.nbytes == big.nbytes
    assert pool.take(big.shape, np.float64) is not big  # another dtype: a new array
    assert pool.take(big.shape, np.float32) is big
    assert pool.nbytes == 0
    arrays = [np.zeros((1 << 18,), np.float32) for _ in range(4)]
    pool.give(*arrays)
    assert pool.nbytes == 3 << 20  # the oldest went first
    assert all(pool.take(big.shape, np.float32) is a for a in reversed(arrays[1:]))


def test_tensors_share_the_kept_memory_and_outputs_return_when_gone() -> None:
    pool = WorkPool(max_bytes=8 << 20)
    work = pool.take_tensor((1 << 18,), torch.int64)  # 2 MB
    assert work.dtype == torch.int64 and work.shape == (1 << 18,)
    pool.give_tensors(work)
    again = pool.take_tensor((1 << 18,), torch.int64)
    assert again.data_ptr() == work.data_ptr()  # the same memory, handed out again
    assert pool.take_tensor((1 << 18,), torch.float64).data_ptr() != work.data_ptr()

    out = pool.output_tensor((2, 1 << 17), torch.float32)  # 1 MB
    pointer = out.data_ptr()
    view = out[1]
    del out
    gc.collect()
    assert pool.nbytes == 0  # a view still uses it
    del view
    gc.collect()
    assert pool.nbytes == 1 << 20
    assert pool.take_tensor((2, 1 << 17), torch.float32).data_ptr() == pointer
