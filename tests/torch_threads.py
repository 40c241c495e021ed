"""`one_thread()`: run a block of torch work on one CPU thread.

The tests' networks (4-32 channels) are too small for a second thread to help, and on a shared
CPU the threads' hand-offs made them up to 5x slower. A single thread also makes float results
independent of the machine's core count, which the bit-for-bit resume tests rely on: a run
trained on two threads and one trained on one differ in the last bits.
"""

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
