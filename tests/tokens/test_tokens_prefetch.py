"""The background batch builder both loaders use: step order, bounded look-ahead, errors and the end."""

import time

import numpy as np
import pytest

from lmforge.tokens.prefetch import Prefetcher


def test_items_come_in_step_order_at_most_depth_ahead():
    made = []

    def make(step):
        made.append(step)
        return None if step == 9 else step * 10

    p = Prefetcher(make, start=3, depth=2, name="t")
    time.sleep(0.3)
    assert made == [3, 4, 5]  # two in the queue and one waiting to be put
    assert [p.next() for _ in range(6)] == [30, 40, 50, 60, 70, 80]
    assert p.next() is None  # the end of a finite loader ends the thread
    assert p.finished and not p._thread.is_alive()


def test_an_error_in_the_thread_is_raised_in_the_consumer_and_stop_joins():
    def make(step):
        if step == 2:
            raise ValueError("bad shard")
        return step

    p = Prefetcher(make, start=0, depth=4, name="t")
    assert p.next() == 0 and p.next() == 1
    with pytest.raises(ValueError, match="bad shard"):
        p.next()
    assert p.finished  # the owner starts a new prefetcher to retry, instead of waiting on this one
    q = Prefetcher(lambda s: s, start=0, depth=1, name="t")
    q.stop()  # a full queue does not keep the thread alive
    assert not q._thread.is_alive()


def test_a_prefetching_loader_retries_a_failed_step_instead_of_hanging(tmp_path):
    """A batch that fails is raised; asking again builds it again (here it then succeeds)."""
    from lmforge.tokens.loader import TokenLoader
    from lmforge.tokens.shards import open_split, write_tokens_dir

    write_tokens_dir(tmp_path, {"train": [np.arange(i, i + 30) % 300 for i in range(20)]}, fingerprint="fp",
                     vocab_size=300)
    loader = TokenLoader(open_split(tmp_path, "train", fingerprint="fp"), seq_len=8, batch_size=2, seed=0,
                         prefetch=2)
    make, calls = loader.make_batch, []

    def flaky(step):
        calls.append(step)
        if len(calls) == 1:
            raise OSError("transient read error")
        return make(step)

    loader.make_batch = flaky
    with pytest.raises(OSError, match="transient"):
        next(loader)
    batch = next(loader)  # a new prefetcher starts at the same step
    assert calls[0] == calls[1] == 0 and batch.input_ids.shape == (2, 8)
