"""The cyclic garbage collector is paused only for the blocks that make large acyclic
structures, and always runs again after them: a run that left it off would keep every cycle
it makes until it ends."""
import gc
import threading
from datetime import datetime, timezone

import pytest

from kcing.building import encoded_documents
from kcing.collector import collector_paused
from kcing.errors import RejectedInput
from kcing.sinks.encoding import logstash_json
from tests.feedrun import SAMPLES


@pytest.fixture(autouse=True)
def collector_running():
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_paused_in_the_block_and_runs_again_after_it_even_when_the_block_fails():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with collector_paused():
            raise ValueError("bad page")
    assert gc.isenabled()


def test_a_block_does_not_restart_a_collector_another_block_paused():
    other_started, other_may_end = threading.Event(), threading.Event()

    def other_block():
        with collector_paused():
            other_started.set()
            other_may_end.wait(5)

    other = threading.Thread(target=other_block)
    other.start()
    other_started.wait(5)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other block, still running, paused it
    other_may_end.set()
    other.join(5)
    assert gc.isenabled()


def test_building_an_object_leaves_the_collector_running_whether_it_is_built_or_rejected():
    real_lava_job = (SAMPLES / "lava" / "5fa2dae359b5140d3b3a61f3.json").read_bytes()
    built = encoded_documents("lava", real_lava_job, datetime(2020, 11, 19, tzinfo=timezone.utc), None, logstash_json)
    assert built.items and gc.isenabled()
    with pytest.raises(RejectedInput):
        encoded_documents("lava", b"not JSON", None, None, logstash_json)
    assert gc.isenabled()
