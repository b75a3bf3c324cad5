"""Oracles: exact publication steps, TWAP values, medians, missing prices, manipulability."""

import pytest

from marginsim.market.oracle import (
    ORACLE_KINDS,
    IndexOracle,
    LastPriceOracle,
    MedianOracle,
    MidPriceOracle,
    Oracle,
    OracleSet,
    PushOracle,
    TwapOracle,
    make_oracle,
)


class FakeQuotes:
    """A PriceQuotes with settable prices; a missing key means no price."""

    def __init__(self, mids=None, lasts=None, index=100.0):
        self.mids = dict(mids or {})
        self.lasts = dict(lasts or {})
        self.index = index

    def mid_price(self, source):
        return self.mids.get(source)

    def last_price(self, source):
        return self.lasts.get(source)

    def index_price(self):
        return self.index


class FakeBook:
    """A thin order book, enough to show that a mid oracle follows one aggressive order."""

    def __init__(self, bids, asks):
        self.bids = dict(bids)  # price -> qty
        self.asks = dict(asks)

    def market_buy(self, qty):
        for price in sorted(self.asks):
            take = min(qty, self.asks[price])
            self.asks[price] -= take
            qty -= take
            if self.asks[price] == 0:
                del self.asks[price]
            if qty == 0:
                break

    def mid(self):
        if not self.bids or not self.asks:
            return None
        return (max(self.bids) + min(self.asks)) / 2


class BookQuotes(FakeQuotes):
    def __init__(self, book, index=100.0):
        super().__init__(index=index)
        self.book = book

    def mid_price(self, source):
        return self.book.mid() if source == "thin" else None


def run(oracle: Oracle, quotes: FakeQuotes, script: dict[int, dict]):
    """Update at each scripted step after applying its changes; return (price, last_update)."""
    out = []
    for step, changes in script.items():
        for attr, value in changes.items():
            setattr(quotes, attr, value)
        oracle.update(step, quotes)
        out.append((oracle.price, oracle.last_update_step))
    return out


# ----------------------------------------------------------------------------- spot oracles
def test_mid_and_last_oracles_report_none_without_a_price():
    quotes = FakeQuotes()
    mid, last = MidPriceOracle("m", "book"), LastPriceOracle("l", "book")
    assert mid.price is None and mid.last_update_step is None
    mid.update(0, quotes)
    last.update(0, quotes)
    assert (mid.price, mid.last_update_step) == (None, None)
    assert (last.price, last.last_update_step) == (None, None)
    quotes.mids["book"], quotes.lasts["book"] = 101.5, 101.0
    mid.update(1, quotes)
    last.update(1, quotes)
    assert (mid.price, mid.last_update_step) == (101.5, 1)
    assert (last.price, last.last_update_step) == (101.0, 1)
    # The book empties: no price now, and the step of the last price is kept.
    del quotes.mids["book"]
    mid.update(2, quotes)
    assert (mid.price, mid.last_update_step) == (None, 1)


def test_a_non_positive_or_nan_quote_counts_as_no_price():
    oracle = MidPriceOracle("m", "book")
    oracle.update(0, FakeQuotes(mids={"book": 0.0}))
    assert oracle.price is None
    oracle.update(1, FakeQuotes(mids={"book": float("nan")}))
    assert oracle.price is None


def test_index_oracle_reads_the_index():
    oracle = IndexOracle("idx")
    assert run(oracle, FakeQuotes(index=2000.0), {0: {}, 1: {"index": 1990.0}}) == [
        (2000.0, 0),
        (1990.0, 1),
    ]


def test_thin_market_mid_oracle_moves_with_one_aggressive_order():
    # 1 unit on each side of 100: one buy of 2 units lifts the mid from 100 to 110.
    book = FakeBook(bids={99.0: 1, 98.0: 5}, asks={101.0: 1, 121.0: 5})
    quotes = BookQuotes(book, index=100.0)
    mid = MidPriceOracle("spot", "thin")
    twap = TwapOracle("twap", "thin", window_steps=4)
    feed = PushOracle("feed", "index", deviation=0.01, heartbeat_steps=100)
    oracles = OracleSet([mid, twap, feed])
    oracles.update_all(0, quotes)
    assert oracles.prices() == {"spot": 100.0, "twap": 100.0, "feed": 100.0}
    book.market_buy(2)  # eats the 101 ask and one unit at 121
    assert book.mid() == 110.0
    oracles.update_all(1, quotes)
    # The spot oracle moves by the full 10%, the 4-step TWAP by a quarter of it after one step,
    # and a feed on the outside index does not move at all.
    assert oracles.prices() == {"spot": 110.0, "twap": 105.0, "feed": 100.0}


# ----------------------------------------------------------------------------- TWAP
def test_twap_exact_values_with_missing_observations_and_skipped_steps():
    oracle = TwapOracle("t", "book", reads="mid", window_steps=3)
    quotes = FakeQuotes()
    got = run(
        oracle,
        quotes,
        {
            0: {},  # nothing observed yet: no price
            1: {"mids": {"book": 10.0}},  # [10]
            2: {"mids": {"book": 20.0}},  # [10, 20]
            3: {"mids": {"book": 30.0}},  # [10, 20, 30]
            4: {"mids": {"book": 60.0}},  # [20, 30, 60]
            5: {"mids": {}},  # empty book: 60 holds -> [30, 60, 60]
            8: {"mids": {"book": 90.0}},  # steps 6, 7 hold 60 -> [60, 60, 90]
        },
    )
    assert got == [
        (None, None),
        (10.0, 1),
        (15.0, 2),
        (20.0, 3),
        (110.0 / 3, 4),
        (50.0, 5),
        (70.0, 8),
    ]


def test_twap_reads_last_trades_and_ramps_up_from_the_first_one():
    oracle = TwapOracle("t", "book", reads="last", window_steps=30)
    quotes = FakeQuotes(mids={"book": 1000.0})  # mids must be ignored
    got = run(oracle, quotes, {0: {}, 1: {"lasts": {"book": 4.0}}, 2: {"lasts": {"book": 8.0}}})
    assert got == [(None, None), (4.0, 1), (6.0, 2)]


def test_twap_of_the_index():
    oracle = make_oracle("t", "twap", source="index", reads="mid", window_steps=2)
    got = run(oracle, FakeQuotes(index=10.0), {0: {}, 1: {"index": 20.0}, 2: {"index": 40.0}})
    assert got == [(10.0, 0), (15.0, 1), (30.0, 2)]


# ----------------------------------------------------------------------------- push feed
def test_push_feed_publishes_on_deviation_or_heartbeat_only():
    oracle = PushOracle("feed", "book", reads="mid", deviation=0.01, heartbeat_steps=5)
    quotes = FakeQuotes()
    observed = [100.0, 100.5, 100.99, 101.0, 100.5, 100.5, 100.5, 100.5, 100.5, 99.9, 99.49]
    got = run(oracle, quotes, {s: {"mids": {"book": p}} for s, p in enumerate(observed)})
    assert [p for p, _ in got] == [
        100.0,  # 0: the first observation publishes
        100.0,  # 1: +0.5% < 1%: stale
        100.0,  # 2: +0.99%: stale
        101.0,  # 3: +1.00% >= 1%: publishes
        101.0,
        101.0,
        101.0,
        101.0,  # 4-7: -0.495% against 101: stale
        100.5,  # 8: heartbeat, 5 steps since step 3
        100.5,  # 9: -0.597%: stale
        99.49,  # 10: -1.005%: publishes
    ]
    published = sorted({u for _, u in got})
    assert published == [0, 3, 8, 10]


def test_push_feed_keeps_its_answer_while_the_source_has_no_price():
    oracle = PushOracle("feed", "book", reads="last", deviation=0.5, heartbeat_steps=2)
    quotes = FakeQuotes()
    got = run(
        oracle,
        quotes,
        {
            0: {},  # no trade yet: nothing to publish
            1: {"lasts": {"book": 10.0}},  # first observation publishes
            2: {"lasts": {}},  # source down: stale
            3: {},  # heartbeat due, but nothing observable
            4: {"lasts": {"book": 10.1}},  # first observable step after: publishes
        },
    )
    assert got == [(None, None), (10.0, 1), (10.0, 1), (10.0, 1), (10.1, 4)]


def test_push_feed_on_the_index():
    oracle = make_oracle(
        "feed", "push", source="index", reads="index", deviation=0.005, heartbeat_steps=60
    )
    got = run(oracle, FakeQuotes(index=2000.0), {0: {}, 1: {"index": 2009.0}, 2: {"index": 2010.0}})
    assert got == [(2000.0, 0), (2000.0, 0), (2010.0, 2)]


# ----------------------------------------------------------------------------- median
def test_median_of_the_sources_that_have_a_price():
    oracle = MedianOracle("med", ["a", "b", "c"], reads="mid")
    quotes = FakeQuotes()
    got = run(
        oracle,
        quotes,
        {
            0: {},  # none priced: no price
            1: {"mids": {"a": 10.0, "c": 30.0}},  # b missing: mean of the two
            2: {"mids": {"a": 10.0, "b": 1000.0, "c": 30.0}},  # a manipulated b is outvoted
            3: {"mids": {"b": 7.0}},
            4: {"mids": {}},
        },
    )
    assert got == [(None, None), (20.0, 1), (30.0, 2), (7.0, 3), (None, 3)]


def test_median_can_include_the_index_and_read_last_prices():
    oracle = make_oracle("med", "median", sources=["a", "index", "b"], reads="last")
    oracle.update(
        0, FakeQuotes(mids={"a": 1.0, "b": 2.0}, lasts={"a": 99.0, "b": 150.0}, index=100.0)
    )
    assert oracle.price == 100.0


# ----------------------------------------------------------------------------- factory
def test_make_oracle_takes_a_full_config_dump():
    dump = {
        "source": "book",
        "sources": [],
        "reads": "mid",
        "window_steps": 30,
        "deviation": 0.005,
        "heartbeat_steps": 60,
    }
    oracles = {
        kind: make_oracle(f"o-{kind}", kind, **{**dump, "sources": ["book"]})
        for kind in ORACLE_KINDS
    }
    assert {k: type(o) for k, o in oracles.items()} == ORACLE_KINDS
    assert oracles["twap"].window_steps == 30
    assert oracles["push"].heartbeat_steps == 60 and oracles["push"].deviation == 0.005
    assert oracles["median"].sources == ("book",)
    index = make_oracle("i", "index", **{**dump, "source": "index"})
    index.update(0, FakeQuotes(index=7.0))
    assert index.price == 7.0


def test_make_oracle_rejects_unknown_kinds_and_parameters():
    with pytest.raises(ValueError) as err:
        make_oracle("x", "vwap", source="book")
    assert str(err.value) == (
        "The 'kind' parameter of make_oracle must be one of ['index', 'last', 'median', 'mid', "
        "'push', 'twap']. Got 'vwap' instead."
    )
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['window'\]"):
        make_oracle("x", "twap", source="book", window=5)


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: TwapOracle("t", "book", window_steps=0),
            "The 'window_steps' parameter of TwapOracle must be an int >= 1. Got 0 instead.",
        ),
        (lambda: PushOracle("p", "book", deviation=0.0), "'deviation' parameter of PushOracle"),
        (lambda: PushOracle("p", "book", heartbeat_steps=0), "'heartbeat_steps' parameter"),
        (lambda: PushOracle("p", "book", reads="index"), "'reads' parameter of PushOracle"),
        (lambda: TwapOracle("t", "book", reads="close"), "one of 'mid', 'last', 'index'"),
        (lambda: MidPriceOracle("m", "index"), "use kind 'index'"),
        (lambda: MedianOracle("m", []), "'sources' parameter of MedianOracle"),
        (lambda: MedianOracle("m", "ab"), "'sources' parameter of MedianOracle"),
        (lambda: MedianOracle("m", ["a", "a"]), "without repeats"),
        (lambda: IndexOracle(""), "'name' parameter of IndexOracle"),
    ],
)
def test_oracle_parameters_are_validated(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_updates_never_go_back_in_steps():
    oracle = IndexOracle("i")
    oracle.update(3, FakeQuotes())
    oracle.update(3, FakeQuotes(index=90.0))  # a re-observation within step 3
    assert oracle.price == 90.0 and oracle.last_update_step == 3
    with pytest.raises(ValueError, match="at least the previous update's step 3. Got 2"):
        oracle.update(2, FakeQuotes())
    with pytest.raises(ValueError, match="an int >= 0"):
        oracle.update(-1, FakeQuotes())


def test_twap_re_observation_in_the_same_step_replaces_that_step():
    twap = TwapOracle("t", "book", window_steps=3)
    twap.update(0, FakeQuotes(mids={"book": 100.0}))
    twap.update(1, FakeQuotes(mids={"book": 110.0}))
    assert twap.price == 105.0
    # a forced sale inside step 1 moves the mid to 80: step 1 now counts 80, once
    twap.update(1, FakeQuotes(mids={"book": 80.0}))
    assert twap.price == 90.0
    # an empty book on the re-observation keeps the step's earlier value
    twap.update(1, FakeQuotes())
    assert twap.price == 90.0
    twap.update(2, FakeQuotes(mids={"book": 120.0}))
    assert twap.price == 100.0  # (100 + 80 + 120) / 3


def test_push_feed_re_observes_within_a_step_on_deviation():
    feed = PushOracle("p", "book", deviation=0.05, heartbeat_steps=60)
    feed.update(0, FakeQuotes(mids={"book": 100.0}))
    feed.update(0, FakeQuotes(mids={"book": 97.0}))  # 3% < 5%: stale
    assert feed.price == 100.0
    feed.update(0, FakeQuotes(mids={"book": 94.0}))  # 6%: publishes within the step
    assert feed.price == 94.0 and feed.last_update_step == 0


# ----------------------------------------------------------------------------- the set
def test_oracle_set_updates_in_the_given_order_and_reports_by_name():
    calls = []

    class Recording(Oracle):
        kind = "recording"

        def _update(self, step, gap, quotes):
            calls.append(self.name)
            return float(len(calls)), True

    oracles = OracleSet([Recording("z"), Recording("a"), Recording("m")])
    oracles.update_all(0, FakeQuotes())
    oracles.update_all(1, FakeQuotes())
    assert calls == ["z", "a", "m"] * 2
    assert oracles.names == ("z", "a", "m") and len(oracles) == 3 and "a" in oracles
    assert oracles.prices() == {"z": 4.0, "a": 5.0, "m": 6.0}
    assert oracles.price("a") == 5.0 and oracles["a"].last_update_step == 1
    with pytest.raises(KeyError, match=r"unknown oracle 'b'; oracles are \['z', 'a', 'm'\]"):
        oracles.price("b")
    with pytest.raises(ValueError, match="'a' repeats"):
        OracleSet([IndexOracle("a"), IndexOracle("a")])
