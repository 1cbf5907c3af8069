import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # The loss tests use tiny tensors: intra-op threads only add spin-wait overhead (10x slower
    # on a loaded 2-core machine) and nothing here depends on parallelism.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
