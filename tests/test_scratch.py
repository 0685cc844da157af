"""`scratch`: the same memory for a name on one thread, grown on demand, apart between threads."""

import threading

import torch

from unmask.sampling.scratch import scratch


def test_the_same_memory_for_a_name_and_dtype_grown_when_needed():
    a = scratch("test-a", (4, 5), torch.float32)
    b = scratch("test-a", (2, 3), torch.float32)
    assert a.shape == (4, 5) and b.shape == (2, 3) and a.data_ptr() == b.data_ptr()
    assert scratch("test-a", (4, 5), torch.float64).data_ptr() != a.data_ptr()  # another dtype
    assert scratch("test-b", (4, 5), torch.float32).data_ptr() != a.data_ptr()  # another name
    big = scratch("test-a", (100, 100), torch.float32)
    assert big.shape == (100, 100) and big.is_contiguous()
    assert scratch("test-a", (3,), torch.float32).data_ptr() == big.data_ptr()


def test_each_thread_has_its_own():
    here = scratch("test-thread", (8,), torch.int64).data_ptr()
    seen = []
    worker = threading.Thread(target=lambda: seen.append(scratch("test-thread", (8,), torch.int64).data_ptr()))
    worker.start()
    worker.join()
    assert seen and seen[0] != here


def test_memory_first_made_in_inference_mode_is_writable_outside_it():
    with torch.inference_mode():
        scratch("test-mode", (6,), torch.float32).fill_(1.0)
    out = scratch("test-mode", (6,), torch.float32)
    torch.add(torch.ones(6), 1.0, out=out)  # an inference tensor would refuse this write
    assert out.tolist() == [2.0] * 6
    with torch.inference_mode():
        scratch("test-mode", (6,), torch.float32).fill_(3.0)
    assert out.tolist() == [3.0] * 6
