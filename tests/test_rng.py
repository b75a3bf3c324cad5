import numpy as np

from marginsim.rng import RandomStreams, replicate_seed_sequence


def test_same_seed_same_stream_and_names_are_independent_of_request_order():
    a = RandomStreams(7)
    b = RandomStreams(7)
    b.get("population:noise")  # requesting another stream first changes nothing
    assert (
        a.get("exogenous").integers(0, 2**62, 4).tolist()
        == b.get("exogenous").integers(0, 2**62, 4).tolist()
    )


def test_different_names_and_seeds_differ():
    s = RandomStreams(7)
    x = s.get("exogenous").random(3)
    y = s.get("schedule").random(3)
    z = RandomStreams(8).get("exogenous").random(3)
    assert not np.array_equal(x, y) and not np.array_equal(x, z)


def test_stream_is_shared_per_name():
    s = RandomStreams(1)
    assert s.get("init") is s.get("init")


def test_replicate_seed_sequence_is_spawn_key_of_master():
    ss = replicate_seed_sequence(42, 3)
    assert ss.entropy == 42 and ss.spawn_key == (3,)
    s1 = RandomStreams(ss).get("exogenous").random()
    s2 = RandomStreams(replicate_seed_sequence(42, 3)).get("exogenous").random()
    s3 = RandomStreams(replicate_seed_sequence(42, 4)).get("exogenous").random()
    assert s1 == s2 and s1 != s3


def test_known_first_draw_is_stable_across_versions():
    # Pins the derivation (sha256 of the name as spawn key): a change here changes every run.
    assert RandomStreams(7).get("exogenous").integers(0, 10**9) == 625824885
    assert RandomStreams(7).get("schedule").integers(0, 10**9) == 547946755
