"""MarginModel: builds a run from a Scenario and owns the seven-phase step."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import mesa
import numpy as np
import pandas as pd

from marginsim.agents.arbitrageur import Arbitrageur, SwapCall
from marginsim.agents.base import OrderBatch, Trader, draw
from marginsim.agents.basis import BasisArbitrageur
from marginsim.agents.fundamental import FundamentalTraders
from marginsim.agents.hedger import Hedger
from marginsim.agents.hunter import ATTACK_COLUMNS as HUNT_COLUMNS
from marginsim.agents.hunter import LiquidationHunter
from marginsim.agents.leveraged import LeveragedTraders, PerpMarginAction, PerpMarginActions
from marginsim.agents.liquidator import (
    BarkCall,
    LiquidateCall,
    Liquidator,
    TakeCall,
)
from marginsim.agents.loopers import LendingAction, LendingActions, LendingLoopers
from marginsim.agents.manipulator import ATTACK_COLUMNS as ORACLE_ATTACK_COLUMNS
from marginsim.agents.manipulator import OracleManipulator, ThinBookMaker
from marginsim.agents.market_maker import MarketMaker, PerpMarketMaker
from marginsim.agents.noise import NoiseTraders
from marginsim.agents.perp_traders import PerpTraders
from marginsim.agents.stablecoin_sellers import StablecoinSellers
from marginsim.agents.wrapped_sellers import WrappedSellers
from marginsim.config import (
    CdpConfig,
    LendingConfig,
    PerpConfig,
    Scenario,
    ScenarioError,
    ShockConfig,
)
from marginsim.ledger import AssetSpec, ConservationError, Ledger
from marginsim.market.amm import ConstantProductPool
from marginsim.market.engine import BookSpec, MatchingEngine, OrderKind
from marginsim.market.exogenous import apply_fundamental_jumps, make_driver
from marginsim.market.oracle import OracleSet, make_oracle
from marginsim.market.view import MarketView
from marginsim.metrics import LiquidationMapRecorder, LiquidationRounds, MetricsRecorder
from marginsim.protocols.bridge import BRIDGE_COLUMNS, Bridge, wrapped_market_oracles
from marginsim.protocols.cdp import AUCTION_COLUMNS, CdpProtocol
from marginsim.protocols.contagion import ContagionMonitor
from marginsim.protocols.events import BAD_DEBT_COLUMNS, LIQUIDATION_COLUMNS, LiquidationPrices
from marginsim.protocols.lending import RAY, LendingPool
from marginsim.protocols.network import EdgeKind, ProtocolNetwork
from marginsim.protocols.perp import PerpContract, PerpVenue
from marginsim.protocols.policies import POLICY_EVENT_COLUMNS, make_policy
from marginsim.protocols.view import ProtocolsView
from marginsim.rng import RandomStreams, run_seed_sequence

__all__ = ["InvariantViolation", "MarginModel"]

logger = logging.getLogger(__name__)

_SECONDS_PER_YEAR = 365 * 86400


#: Status reported for an order a perp venue refused in its pre-trade margin check (the
#: engine never saw it; engine statuses are small non-negative codes).
MARGIN_REFUSED = -1


class _Refused(RuntimeError):
    """A protocol refused a call inside an atomic action (the action is reverted)."""


class InvariantViolation(RuntimeError):
    """An invariant (ledger conservation, ...) failed during a run with checks enabled."""


class _Quotes:
    """The :class:`~marginsim.market.oracle.PriceQuotes` the oracles read: books, pools, index."""

    def __init__(self, model: MarginModel) -> None:
        self._model = model

    def mid_price(self, source: str) -> float | None:
        pool = self._model.amm_by_id.get(source)
        if pool is not None:
            return pool.mid_price()
        return self._model.engine.mid_price(source)

    def last_price(self, source: str) -> float | None:
        pool = self._model.amm_by_id.get(source)
        if pool is not None:
            return pool.last_price()
        return self._model.engine.last_price(source)

    def index_price(self) -> float:
        return self._model.index_price


class _Prices:
    """The protocols' :class:`~marginsim.protocols.lending.PriceFeed`: oracle names or constants.

    Before step 0 (while explicit accounts are placed) no oracle has observed anything and
    the books are empty, so an oracle whose source prices the exogenous asset reports the
    index's initial value, one that reads only the thin-book maker's book reports that
    maker's fixed fair value, and any other oracle has no price yet.
    """

    def __init__(self, oracles: OracleSet, initial: dict[str, float | None]) -> None:
        self._oracles = oracles
        self._initial: dict[str, float | None] | None = initial

    def started(self) -> None:
        """From now on, oracles report what they have observed."""
        self._initial = None

    def price(self, ref: str | float) -> float | None:
        if not isinstance(ref, str):
            return float(ref)
        if self._initial is not None:
            return self._initial[ref]
        return self._oracles.price(ref)


class MarginModel(mesa.Model):
    """A run of a scenario: the shared market, the protocols and the agents.

    One call of :meth:`step` runs the seven phases of DESIGN.md section 4 in order:
    :meth:`phase_exogenous`, :meth:`phase_oracles`, :meth:`phase_accrual`,
    :meth:`phase_agents`, :meth:`phase_liquidations`, :meth:`phase_settlement`,
    :meth:`phase_record`. Data flows only down that list.

    Args:
        scenario: The validated scenario.
        seed: Overrides ``scenario.run.seed``; a ``SeedSequence`` is how a sweep replicate
            passes its own stream.
        check_invariants: Verify ledger conservation after every step and raise
            :class:`InvariantViolation` on the first failure.

    Attributes:
        ledger: Every token balance.
        engine: The shared matching engine.
        oracles: The scenario's oracles.
        amms: The AMM pools, in scenario order.
        index_path: The exogenous index, ``steps + 1`` values (value before step 0 first).
        step_index: The step being run (0-based), ``-1`` before the first.
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int | np.random.SeedSequence | None = None,
        check_invariants: bool = False,
    ) -> None:
        self.scenario = scenario
        if seed is None:  # a sweep run's spawn key (run.spawn_key) picks its own stream
            seed = run_seed_sequence(scenario.run.seed, scenario.run.spawn_key)
        self.streams = RandomStreams(seed)
        super().__init__(rng=self.streams.get("schedule"))
        self.check_invariants = check_invariants
        self.step_index = -1
        self.liquidation_rounds = 0
        self.shock_rows: list[dict[str, object]] = []
        #: Liquidations (lending) and auction takes (CDP) in the current step, all rounds.
        self.liquidations_this_step = 0

        self._build_ledger()
        self._build_market()
        self._build_exogenous()
        self._build_protocols()
        self._build_agents()
        self._build_accounts()
        self.view = MarketView(
            self.engine, self.ledger, self.oracles, self.index_path, self.amm_by_id
        )
        self.trades_at_step_start = self.engine.n_trades
        self.recorder = MetricsRecorder.for_model(self)
        mc = scenario.metrics
        self.liquidation_map_recorder = LiquidationMapRecorder(
            mc.liquidation_map_every, mc.liquidation_map_range, mc.liquidation_map_points
        )
        #: Row marks that give the ``liquidations`` table its ``round`` column.
        self.liquidation_round_marks = LiquidationRounds()
        if self.check_invariants:
            self._check_invariants("initial state")

    # ================================================================ construction
    def _build_ledger(self) -> None:
        sc = self.scenario
        assets = [AssetSpec(a.symbol, a.decimals) for a in sc.assets]
        # Each AMM pool's LP share is an asset of its own (9 decimals); each lending pool adds
        # receipt and debt tokens per reserve.
        assets += [AssetSpec(f"LP-{p.id}", 9) for p in sc.amms]
        decimals = {a.symbol: a.decimals for a in sc.assets}
        # A reserve may be another pool's receipt token (network collateral edge): it has
        # its underlying's decimals, resolved through chains of receipt tokens.
        decimals |= {r: sc.asset_decimals(r) for r in sc.receipt_tokens()}
        for name, proto in sc.protocols.items():
            if isinstance(proto, LendingConfig):
                assets += LendingPool.derived_assets(name, proto, decimals)
        self.ledger = Ledger(assets)
        self.escrow_holder = self.ledger.add_holder("engine:escrow")

    def _units(self, symbol: str, amount: float) -> int:
        """Human amount to ledger units, rounded down (never creates value)."""
        return int(math.floor(amount * 10 ** self.scenario.asset_decimals(symbol) + 1e-9))

    def _build_market(self) -> None:
        sc, ledger = self.scenario, self.ledger
        specs = []
        for ins in sc.instruments:
            base_dec = sc.asset_decimals(ins.base)
            quote_dec = sc.asset_decimals(ins.quote)
            specs.append(
                BookSpec(
                    instrument_id=ins.id,
                    kind=ins.kind,
                    base_asset=ledger.asset_id(ins.base) if ins.kind == "spot" else -1,
                    quote_asset=ledger.asset_id(ins.quote),
                    base_units_per_lot=round(ins.lot * 10**base_dec),
                    quote_units_per_tick_lot=round(ins.tick * ins.lot * 10**quote_dec),
                    tick=ins.tick,
                    lot=ins.lot,
                    maker_fee=ins.maker_fee,
                    taker_fee=ins.taker_fee,
                    fee_holder=ledger.add_holder(f"fees:{ins.id}"),
                )
            )
        self.engine = MatchingEngine(ledger, specs, escrow_holder=self.escrow_holder)
        self.instrument_index = {ins.id: k for k, ins in enumerate(sc.instruments)}
        spot = [k for k, ins in enumerate(sc.instruments) if ins.kind == "spot"]
        self.primary_instrument = spot[0] if spot else -1
        self.primary_instrument_id = sc.instruments[spot[0]].id if spot else ""

        self.amms: list[ConstantProductPool] = []
        for pool_cfg in sc.amms:
            holder = ledger.add_holder(f"amm:{pool_cfg.id}")
            pool = ConstantProductPool(
                ledger,
                pool_id=pool_cfg.id,
                base_asset=ledger.asset_id(pool_cfg.base),
                quote_asset=ledger.asset_id(pool_cfg.quote),
                lp_asset=ledger.asset_id(f"LP-{pool_cfg.id}"),
                pool_holder=holder,
                fee_ppm=round(pool_cfg.fee * 1_000_000),
            )
            seeder = ledger.add_holder(f"amm:{pool_cfg.id}:seed-lp")
            base_units = self._units(pool_cfg.base, pool_cfg.initial_base)
            quote_units = self._units(pool_cfg.quote, pool_cfg.initial_quote)
            ledger.mint(seeder, pool.base_asset, base_units, "initial AMM liquidity")
            ledger.mint(seeder, pool.quote_asset, quote_units, "initial AMM liquidity")
            pool.add_liquidity(seeder, base_units, quote_units)
            self.amms.append(pool)
        self.amm_by_id = {p.pool_id: p for p in self.amms}

        self.oracles = OracleSet(
            [make_oracle(name, **cfg.model_dump()) for name, cfg in sc.oracles.items()]
        )
        self.quotes = _Quotes(self)

    def _build_exogenous(self) -> None:
        sc = self.scenario
        ex = sc.exogenous
        params = ex.model_dump(exclude={"model", "asset", "quote"}, exclude_none=True)
        try:
            driver = make_driver(ex.model, **_driver_params(ex.model, params))
            path = driver.generate(sc.run.steps, sc.run.step_seconds, self.streams.get("exogenous"))
        except (ValueError, OSError) as exc:  # e.g. a replay file that is missing or short
            raise ScenarioError([("exogenous", str(exc))], "exogenous driver") from None
        jumps = [s for s in sc.shocks if s.kind == "fundamental_jump" and s.step < sc.run.steps]
        if jumps:
            # A jump scheduled for step t moves the index during step t, i.e. from value t+1.
            path = apply_fundamental_jumps(
                path, [s.step + 1 for s in jumps], [s.size for s in jumps]
            )
        self.index_path = np.asarray(path, dtype=np.float64)
        self.index_price = float(self.index_path[0])
        dt = sc.run.step_seconds / _SECONDS_PER_YEAR
        self.calm_volatility = max(ex.volatility, 1e-6) * math.sqrt(dt)
        self.shocks_by_step: dict[int, list[ShockConfig]] = {}
        for shock in sc.shocks:
            if shock.step >= sc.run.steps:
                logger.warning(
                    "shock %s at step %d is after the last step (%d): it will not fire",
                    shock.kind,
                    shock.step,
                    sc.run.steps - 1,
                )
            self.shocks_by_step.setdefault(shock.step, []).append(shock)
        self.shock_holder = self.ledger.add_holder("outside:shock")

    def _initial_oracle_prices(self) -> dict[str, float | None]:
        sc = self.scenario
        index_asset = sc.exogenous.asset
        bases = {i.id: i.base for i in sc.instruments} | {p.id: p.base for p in sc.amms}
        tb = sc.agents.thin_book_maker
        thin_book = sc.instrument(tb.instrument).id if tb.count else None
        # A wrapped asset of the index asset is fully backed before step 0: it opens at the
        # index like the underlying's own books.
        index_like = {index_asset} | {
            b.wrapped for b in sc.network.bridges if b.asset == index_asset
        }
        out: dict[str, float | None] = {}
        for name, cfg in sc.oracles.items():
            sources = cfg.sources if cfg.kind == "median" else [cfg.source]
            prices_index = all(s == "index" or bases.get(s) in index_like for s in sources)
            out[name] = float(self.index_path[0]) if prices_index else None
            if not prices_index and thin_book is not None and set(sources) == {thin_book}:
                # A book quoted only around a fixed fair value opens at that value.
                out[name] = float(sc.agents.thin_book_maker.price)
        return out

    def _build_protocols(self) -> None:
        prices = _Prices(self.oracles, self._initial_oracle_prices())
        self.prices = prices
        self.bridges: dict[str, Bridge] = {
            b.name: Bridge(self.ledger, b) for b in self.scenario.network.bridges
        }
        self.lending: dict[str, LendingPool] = {}
        self.cdps: dict[str, CdpProtocol] = {}
        self.perps: dict[str, PerpVenue] = {}
        for name, cfg in self.scenario.protocols.items():
            if isinstance(cfg, LendingConfig):
                self.lending[name] = LendingPool(self.ledger, name, cfg, prices)
            elif isinstance(cfg, CdpConfig):
                self.cdps[name] = CdpProtocol(self.ledger, name, cfg, prices)
            elif isinstance(cfg, PerpConfig):
                contracts = [
                    PerpContract(k, self.engine.specs[k])
                    for k, ins in enumerate(self.scenario.instruments)
                    if ins.kind == "perp" and ins.venue == name
                ]
                self.perps[name] = PerpVenue(self.ledger, name, cfg, contracts, prices, self.engine)
        # Engine instrument index -> the perp venue that margins it (and, as an array for
        # the hot path of _submit, its position among the venues, -1 for spot books).
        self.perp_of_instrument = {
            c: venue for venue in self.perps.values() for c in venue.instruments
        }
        self._venue_of_instrument = np.full(len(self.engine.specs), -1, dtype=np.int64)
        for v, venue in enumerate(self.perps.values()):
            self._venue_of_instrument[venue.instruments] = v
        perp_bases = {
            k: ins.base for k, ins in enumerate(self.scenario.instruments) if ins.kind == "perp"
        }
        self.protocols_view = ProtocolsView(self.lending, self.cdps, self.perps, perp_bases)
        self._build_network()
        self._attach_policies()

    def _build_network(self) -> None:
        """The protocol network, the claim-token prices and the contagion monitor.

        A lending reserve that is another pool's receipt token is priced at its oracle
        (the underlying's) times the issuer's liquidity index, read live; one that is a
        bridge's wrapped asset at its oracle times the bridge's backing. Both are how a loss
        at the issuer reaches the holders' health factors (DESIGN.md s. 6).
        """
        sc = self.scenario
        receipts = sc.receipt_tokens()
        market_oracles = wrapped_market_oracles(sc)
        wrapped = {
            b.wrapped: bridge
            for b, bridge in zip(sc.network.bridges, self.bridges.values(), strict=True)
        }
        #: Ledger asset id of a receipt token -> (issuing pool, underlying symbol).
        self.receipt_of_asset: dict[int, tuple[LendingPool, str]] = {}
        for pool_name, (issuer, underlying) in receipts.items():
            self.receipt_of_asset[self.ledger.asset_id(pool_name)] = (
                self.lending[issuer],
                underlying,
            )
        # Bots value seized claims through the view (redeem, or hold a wrapped asset).
        self.protocols_view.set_claims(
            {a: (p.name, u) for a, (p, u) in self.receipt_of_asset.items()},
            [bridge.wrapped for bridge in self.bridges.values()],
        )
        for pool in self.lending.values():
            for symbol in pool.symbols:
                if symbol in receipts:
                    issuer = self.lending[receipts[symbol][0]]
                    pool.set_exchange_rate(symbol, _IndexRate(issuer, receipts[symbol][1]))
                elif (
                    symbol in wrapped
                    and market_oracles.get(str(pool.config.reserves[symbol].price)) != symbol
                ):
                    # Priced by the underlying's oracle: times the proof of reserve. One that
                    # reads the wrapped asset's own book sees the discount through trading.
                    pool.set_exchange_rate(symbol, wrapped[symbol].backing)
        self.network = ProtocolNetwork.from_scenario(sc)
        self.contagion = ContagionMonitor(
            self.network,
            self.ledger,
            self.lending,
            self.cdps,
            self.perps,
            self.bridges,
            debtrank_every=sc.network.debtrank_every,
            # The unbacked wrapped supply is valued at the underlying's price: the index
            # when the bridge locks the exogenous asset.
            underlying_prices={
                b.name: self._index_now for b in sc.network.bridges if b.asset == sc.exogenous.asset
            },
        )

    def _index_now(self) -> float:
        """The exogenous index price now (read-only)."""
        return float(self.view.index_price)

    def _attach_policies(self) -> None:
        """Liquidation policies of pools and venues (static: none; docs/policies.md)."""
        seconds = self.scenario.run.step_seconds
        for name, pool in self.lending.items():
            cfg = pool.config.liquidation_policy
            policy = make_policy(name, cfg, seconds)
            if policy is not None:  # integrated: reads combined health across the network
                policy.bind_network(self.contagion.combined_health)
            pool.attach_policy(policy, getattr(cfg, "asset", ""))
        for name, venue in self.perps.items():
            venue.attach_policy(make_policy(name, venue.config.liquidation_policy, seconds))

    def _endow(self, first: int, count: int, symbol: str, amount: float) -> None:
        """Mint ``amount`` of ``symbol`` to each of ``count`` holders from ``first``.

        A population is endowed in one write with one journal line, so 10^6 accounts do not
        make 10^6 rows in the ``mints`` table.
        """
        units = self._units(symbol, amount)
        if not units:
            return
        asset = self.ledger.asset_id(symbol)
        issuer = self.receipt_of_asset.get(asset)
        if issuer is not None:
            # A receipt token exists only as a supply to its pool: supply the underlying.
            pool, underlying = issuer
            for holder in range(first, first + count):
                self._endow(holder, 1, underlying, amount)
                result = pool.supply(holder, underlying, units)
                if not result.ok:
                    raise ScenarioError(
                        [(f"{symbol}", f"supply to {pool.name} refused: {result.reason}")],
                        "initial endowment",
                    )
            return
        for bridge in self.bridges.values():
            if asset == bridge.wrapped:
                # A wrapped asset exists only against the bridge's lock: bridged before t=0.
                for holder in range(first, first + count):
                    bridge.genesis(holder, units)
                return
        if count == 1:
            self.ledger.mint(first, asset, units, "initial endowment")
        else:
            self.ledger.mint_block(first, count, asset, units, "initial endowment")

    def _build_agents(self) -> None:
        sc, ledger = self.scenario, self.ledger
        agents = sc.agents
        self.market_makers: list[MarketMaker] = []
        self.traders: list[Trader] = []
        mm = agents.market_makers
        if mm.count:
            ins = self.instrument_index[sc.instrument(mm.instrument).id]
            spec = self.engine.specs[ins]
            base_sym, quote_sym = (
                sc.instrument(mm.instrument).base,
                sc.instrument(mm.instrument).quote,
            )
            for k in range(mm.count):
                holder = ledger.add_holder(f"market_maker[{k}]")
                self._endow(holder, 1, base_sym, mm.capital_base)
                self._endow(holder, 1, quote_sym, mm.capital_quote)
                self.market_makers.append(
                    MarketMaker(
                        self,
                        mm,
                        holder,
                        ins,
                        spec.base_asset,
                        spec.quote_asset,
                        self.calm_volatility,
                    )
                )
        for key, cls in (("noise", NoiseTraders), ("fundamental", FundamentalTraders)):
            cfg = getattr(agents, key)
            if not cfg.count:
                continue
            ins_cfg = sc.instrument(cfg.instrument)
            first = ledger.add_holders(key, cfg.count)
            self._endow(first, cfg.count, ins_cfg.base, cfg.capital_base)
            self._endow(first, cfg.count, ins_cfg.quote, cfg.capital_quote)
            self.traders.append(
                cls(
                    self,
                    cfg,
                    first,
                    self.instrument_index[ins_cfg.id],
                    self.streams.get(f"population:{key}"),
                )
            )
        self.liquidators: list[Liquidator] = []
        liq = agents.liquidators
        gas_bids = draw(liq.gas_bid, liq.count, self.streams.get("liquidators"))
        for k in range(liq.count):
            holder = ledger.add_holder(f"liquidator[{k}]")
            for symbol, amount in liq.capital.items():
                self._endow(holder, 1, symbol, amount)
            bot = Liquidator(self, liq, holder)
            bot.gas_bid_units = (
                self._units(liq.gas_asset, max(float(gas_bids[k]), 0.0))
                if sc.run.block_space
                else 0
            )
            self.liquidators.append(bot)
        self.block_producer = ledger.add_holder("chain:block_producer")
        #: Liquidation calls included in blocks, and gas paid for them, this step.
        self.liquidation_calls = 0
        self.gas_paid_units = 0
        self._build_perp_agents()
        self._build_loopers()
        self._build_leveraged_traders()
        self._build_manipulator()
        self._build_arbitrageurs()
        self._build_hunter()
        self._build_hedgers()
        self._build_stablecoin_sellers()
        self._build_wrapped_market()
        self._build_basis_arbitrageurs()

    def _build_basis_arbitrageurs(self) -> None:
        """Basis arbitrageurs ``basis_arbitrageur[k]``: spot wallet plus perp margin.

        Each acts in the shuffled order of the traders, like any trader.
        """
        sc, cfg = self.scenario, self.scenario.agents.basis_arbitrageurs
        if not cfg.count:
            return
        perp_cfg = sc.instrument(
            cfg.perp_instrument or next(i.id for i in sc.instruments if i.kind == "perp")
        )
        spot_id = cfg.spot_instrument or next(
            (
                i.id
                for i in sc.instruments
                if i.kind == "spot" and (i.base, i.quote) == (perp_cfg.base, perp_cfg.quote)
            ),
            None,
        )
        if spot_id is None:
            raise ScenarioError(
                [
                    (
                        "agents.basis_arbitrageurs.spot_instrument",
                        f"no spot book of {perp_cfg.base}-{perp_cfg.quote}",
                    )
                ],
                "agents",
            )
        perp, spot = self.instrument_index[perp_cfg.id], self.instrument_index[spot_id]
        for k in range(cfg.count):
            holder = self.ledger.add_holder(f"basis_arbitrageur[{k}]")
            venue = self._perp_margin(perp, holder, 1, cfg.margin)
            self._endow(holder, 1, perp_cfg.base, cfg.capital_base)
            self._endow(holder, 1, perp_cfg.quote, cfg.capital_quote)
            self.traders.append(
                BasisArbitrageur(self, cfg, holder, perp, spot, venue.name, self.protocols_view)
            )

    def _build_arbitrageurs(self) -> None:
        """Arbitrageurs ``arbitrageur[k]``, each endowed with its base and quote capital.

        They are registered with :attr:`traders`, so they act in the shuffled trader order of
        :meth:`phase_agents` (one activation: book orders, then swaps).
        """
        sc, cfg = self.scenario, self.scenario.agents.arbitrageurs
        #: Swaps of arbitrageurs that their pool refused, over the run.
        self.swaps_refused = 0
        if not cfg.count:
            return
        pool_cfg = next(p for p in sc.amms if cfg.pool is None or p.id == cfg.pool)
        ins_id = cfg.instrument or next(
            i.id
            for i in sc.instruments
            if i.kind == "spot" and (i.base, i.quote) == (pool_cfg.base, pool_cfg.quote)
        )
        pool = self.amm_by_id[pool_cfg.id]
        for k in range(cfg.count):
            holder = self.ledger.add_holder(f"arbitrageur[{k}]")
            self._endow(holder, 1, pool_cfg.base, cfg.capital_base)
            self._endow(holder, 1, pool_cfg.quote, cfg.capital_quote)
            self.traders.append(
                Arbitrageur(
                    self,
                    cfg,
                    holder,
                    pool_cfg.id,
                    self.instrument_index[ins_id],
                    pool.base_asset,
                    pool.quote_asset,
                )
            )

    def _build_loopers(self) -> None:
        """The lending loopers: a block of holders with ``capital`` of collateral each.

        Their accounts are registered with the pool at once (ascending ids), so the pool's
        scans list them in a fixed order before any of them acts.
        """
        sc, cfg = self.scenario, self.scenario.agents.lending_loopers
        #: Lending actions of loopers the pools refused, over the run.
        self.lending_actions_refused = 0
        if not cfg.count:
            return
        ins_id = cfg.instrument or next(
            i.id
            for i in sc.instruments
            if i.kind == "spot" and i.base == cfg.collateral and i.quote == cfg.debt
        )
        first = self.ledger.add_holders("lending_loopers", cfg.count)
        self._endow(first, cfg.count, cfg.collateral, cfg.capital)
        self.lending[cfg.pool].register_accounts(np.arange(first, first + cfg.count))
        self.traders.append(
            LendingLoopers(
                self,
                cfg,
                first,
                self.instrument_index[ins_id],
                self.ledger.asset_id(cfg.collateral),
                self.streams.get("population:lending_loopers"),
            )
        )

    def _build_leveraged_traders(self) -> None:
        """The leveraged traders: a block of holders with ``capital`` of collateral each.

        Their accounts are registered with the pool and the perp venue at once (ascending
        ids), so the scans list them in a fixed order before any of them acts.
        """
        sc, cfg = self.scenario, self.scenario.agents.leveraged_traders
        #: Lending and margin actions of leveraged traders the venues refused, over the run.
        self.leveraged_actions_refused = 0
        if not cfg.count:
            return
        perp_id = cfg.perp_instrument or next(i.id for i in sc.instruments if i.kind == "perp")
        ins = self.instrument_index[perp_id]
        venue = self.perp_of_instrument[ins]
        first = self.ledger.add_holders("leveraged_traders", cfg.count)
        self._endow(first, cfg.count, cfg.collateral, cfg.capital)
        holders = np.arange(first, first + cfg.count)
        self.lending[cfg.pool].register_accounts(holders)
        venue.register_accounts(holders)
        self.traders.append(
            LeveragedTraders(
                self,
                cfg,
                first,
                ins,
                venue.name,
                self.calm_volatility,
                self.streams.get("population:leveraged_traders"),
            )
        )

    def _build_manipulator(self) -> None:
        """The thin book's maker (fixed fair value) and the oracle manipulator, if enabled.

        The maker joins the market makers (it quotes before the traders, every step); the
        manipulator joins the traders (shuffled activation, :meth:`_activate_manipulator`).
        """
        sc, ledger = self.scenario, self.ledger
        #: The oracle manipulator, ``None`` when the scenario has none.
        self.manipulator: OracleManipulator | None = None
        tb = sc.agents.thin_book_maker
        if tb.count:
            ins_cfg = sc.instrument(tb.instrument)
            ins = self.instrument_index[ins_cfg.id]
            spec = self.engine.specs[ins]
            holder = ledger.add_holder("thin_book_maker[0]")
            self._endow(holder, 1, ins_cfg.base, tb.capital_base)
            self._endow(holder, 1, ins_cfg.quote, tb.capital_quote)
            self.market_makers.append(
                ThinBookMaker(
                    self, tb, holder, ins, spec.base_asset, spec.quote_asset, self.calm_volatility
                )
            )
        cfg = sc.agents.oracle_manipulator
        if not cfg.enabled:
            return
        where = "agents.oracle_manipulator"
        pool = self.lending.get(cfg.pool)
        if pool is None:
            raise ScenarioError([(f"{where}.pool", f"no lending pool {cfg.pool!r}")], where)
        for field in ("collateral", "debt"):
            symbol = getattr(cfg, field)
            if symbol not in {r.symbol for r in pool.reserves}:
                raise ScenarioError(
                    [(f"{where}.{field}", f"pool {cfg.pool!r} has no reserve {symbol!r}")], where
                )
        ins_id = cfg.instrument or next(
            (
                i.id
                for i in sc.instruments
                if i.kind == "spot" and i.base == cfg.collateral and i.quote == cfg.debt
            ),
            None,
        )
        if ins_id not in self.instrument_index:
            raise ScenarioError(
                [(f"{where}.instrument", f"no spot book of {cfg.collateral}-{cfg.debt}")], where
            )
        holder = ledger.add_holder("oracle_manipulator")
        self._endow(holder, 1, cfg.collateral, cfg.capital_collateral)
        self._endow(holder, 1, cfg.debt, cfg.capital_debt)
        self.manipulator = OracleManipulator(
            self,
            cfg,
            holder,
            self.instrument_index[ins_id],
            ledger.asset_id(cfg.collateral),
            ledger.asset_id(cfg.debt),
            self.protocols_view,
            collateral_is_index=cfg.collateral == sc.exogenous.asset,
        )
        self.traders.append(self.manipulator)

    def _build_hunter(self) -> None:
        """The liquidation hunters: individuals with their own wallets, among the traders.

        Each acts in the shuffled order of the traders, like any trader.
        """
        sc, cfg = self.scenario, self.scenario.agents.liquidation_hunter
        self.hunters: list[LiquidationHunter] = []
        if not cfg.count:
            return
        ins_cfg = sc.instrument(cfg.instrument)
        ins = self.instrument_index[ins_cfg.id]
        spec = self.engine.specs[ins]
        for k in range(cfg.count):
            holder = self.ledger.add_holder(f"liquidation_hunter[{k}]")
            for symbol, amount in cfg.capital.items():
                self._endow(holder, 1, symbol, amount)
            hunter = LiquidationHunter(
                self,
                cfg,
                holder,
                ins,
                spec.base_asset,
                spec.quote_asset,
                ins_cfg.base,
                self.protocols_view,
            )
            self.hunters.append(hunter)
            self.traders.append(hunter)

    def _build_hedgers(self) -> None:
        """The hedgers ``hedger[k]``: spot base in the wallet, margin on the perp venue.

        Each acts in the shuffled order of the traders, like any trader.
        """
        sc, cfg = self.scenario, self.scenario.agents.hedgers
        self.hedgers: list[Hedger] = []
        if not cfg.count:
            return
        perp_ids = [i.id for i in sc.instruments if i.kind == "perp"]
        ins_cfg = sc.instrument(cfg.instrument or perp_ids[0])
        ins = self.instrument_index[ins_cfg.id]
        for k in range(cfg.count):
            holder = self.ledger.add_holder(f"hedger[{k}]")
            venue = self._perp_margin(ins, holder, 1, cfg.margin)
            self._endow(holder, 1, ins_cfg.base, cfg.spot_holdings)
            hedger = Hedger(
                self,
                cfg,
                holder,
                ins,
                venue.name,
                self.ledger.asset_id(ins_cfg.base),
                self.protocols_view,
            )
            self.hedgers.append(hedger)
            self.traders.append(hedger)

    def _build_stablecoin_sellers(self) -> None:
        """Holders of a CDP's stablecoin who sell it when the CDP carries system debt.

        A population among the traders (shuffled activation, orders only).
        """
        sc, cfg = self.scenario, self.scenario.agents.stablecoin_sellers
        if not cfg.count:
            return
        where = "agents.stablecoin_sellers"
        cdp = self.cdps.get(cfg.cdp)
        if cdp is None:
            raise ScenarioError([(f"{where}.cdp", f"no CDP protocol {cfg.cdp!r}")], where)
        if cfg.instrument is not None:
            ins_cfg = sc.instrument(cfg.instrument)
            ins = self.instrument_index[ins_cfg.id]
        else:
            found = next(
                (
                    k
                    for k, spec in enumerate(self.engine.specs)
                    if spec.kind == "spot" and spec.base_asset == cdp.stable_asset
                ),
                None,
            )
            if found is None:
                raise ScenarioError(
                    [(f"{where}.instrument", "no spot book of the CDP's stablecoin")], where
                )
            ins = found
        spec = self.engine.specs[ins]
        if spec.base_asset != cdp.stable_asset:
            raise ScenarioError(
                [(f"{where}.instrument", "the book's base is not the CDP's stablecoin")], where
            )
        base = self.ledger.assets[spec.base_asset].symbol
        quote = self.ledger.assets[spec.quote_asset].symbol
        first = self.ledger.add_holders("stablecoin_sellers", cfg.count)
        self._endow(first, cfg.count, base, cfg.capital_base)
        self._endow(first, cfg.count, quote, cfg.capital_quote)
        self.traders.append(
            StablecoinSellers(
                self,
                cfg,
                first,
                ins,
                cdp.stable_asset,
                self.protocols_view,
                self.streams.get("population:stablecoin_sellers"),
            )
        )

    def _build_wrapped_market(self) -> None:
        """The wrapped asset's book: its makers (``wrapped_maker[k]``) and sellers.

        The makers join the market makers (they quote before the traders); the sellers are
        a population among the traders (shuffled activation, orders only).
        """
        sc, ledger = self.scenario, self.ledger
        wm = sc.agents.wrapped_makers
        if wm.count:
            if wm.instrument is None:
                raise ScenarioError(
                    [("agents.wrapped_makers.instrument", "required when count > 0")], "agents"
                )
            ins_cfg = sc.instrument(wm.instrument)
            ins = self.instrument_index[ins_cfg.id]
            spec = self.engine.specs[ins]
            for k in range(wm.count):
                holder = ledger.add_holder(f"wrapped_maker[{k}]")
                self._endow(holder, 1, ins_cfg.base, wm.capital_base)
                self._endow(holder, 1, ins_cfg.quote, wm.capital_quote)
                self.market_makers.append(
                    MarketMaker(
                        self,
                        wm,
                        holder,
                        ins,
                        spec.base_asset,
                        spec.quote_asset,
                        self.calm_volatility,
                    )
                )
        cfg = sc.agents.wrapped_sellers
        if not cfg.count:
            return
        where = "agents.wrapped_sellers"
        if cfg.bridge not in self.bridges:
            raise ScenarioError(
                [
                    (
                        f"{where}.bridge",
                        f"no bridge {cfg.bridge!r}; bridges are {sorted(self.bridges)}",
                    )
                ],
                where,
            )
        bridge = self.bridges[cfg.bridge]

        def book(field: str, base: int, ins_id: str | None, quote: int | None) -> int:
            if ins_id is not None:
                ins = self.instrument_index[sc.instrument(ins_id).id]
            else:
                found = next(
                    (
                        k
                        for k, spec in enumerate(self.engine.specs)
                        if spec.kind == "spot"
                        and spec.base_asset == base
                        and quote in (None, spec.quote_asset)
                    ),
                    None,
                )
                if found is None:
                    symbol = ledger.assets[base].symbol
                    raise ScenarioError([(f"{where}.{field}", f"no spot book of {symbol}")], where)
                ins = found
            spec = self.engine.specs[ins]
            if spec.base_asset != base or quote not in (None, spec.quote_asset):
                raise ScenarioError(
                    [
                        (
                            f"{where}.{field}",
                            "the book does not trade this asset against the wrapped book's quote",
                        )
                    ],
                    where,
                )
            return ins

        ins = book("instrument", bridge.wrapped, cfg.instrument, None)
        quote = self.engine.specs[ins].quote_asset
        under = book("underlying_instrument", bridge.asset, cfg.underlying_instrument, quote)
        first = ledger.add_holders("wrapped_sellers", cfg.count)
        self._endow(first, cfg.count, ledger.assets[bridge.wrapped].symbol, cfg.capital_base)
        self._endow(first, cfg.count, ledger.assets[quote].symbol, cfg.capital_quote)
        self.traders.append(
            WrappedSellers(
                self,
                cfg,
                first,
                ins,
                under,
                bridge.wrapped,
                bridge.backing,
                self.streams.get("population:wrapped_sellers"),
            )
        )

    def _perp_margin(self, instrument: int, first: int, count: int, amount: float) -> PerpVenue:
        """Give accounts ``amount`` of settlement asset and deposit it on the venue."""
        venue = self.perp_of_instrument[instrument]
        symbol = venue.config.settlement
        self._endow(first, count, symbol, amount)
        units = self._units(symbol, amount)
        for holder in range(first, first + count):
            result = venue.deposit(holder, units)
            if not result.ok:
                raise ValueError(f"margin deposit refused: {result.reason}")
        return venue

    def _build_perp_agents(self) -> None:
        sc, agents = self.scenario, self.scenario.agents
        perp_ids = [i.id for i in sc.instruments if i.kind == "perp"]
        pmm = agents.perp_market_makers
        for k in range(pmm.count):
            ins = self.instrument_index[pmm.instrument or perp_ids[0]]
            holder = self.ledger.add_holder(f"perp_market_maker[{k}]")
            venue = self._perp_margin(ins, holder, 1, pmm.margin)
            self.market_makers.append(
                PerpMarketMaker(
                    self, pmm, holder, ins, venue.name, self.protocols_view, self.calm_volatility
                )
            )
        pt = agents.perp_traders
        if pt.count:
            ins = self.instrument_index[pt.instrument or perp_ids[0]]
            first = self.ledger.add_holders("perp_traders", pt.count)
            venue = self._perp_margin(ins, first, pt.count, pt.margin)
            self.traders.append(
                PerpTraders(
                    self,
                    pt,
                    first,
                    ins,
                    venue.name,
                    self.protocols_view,
                    self.streams.get("population:perp_traders"),
                )
            )

    def _build_accounts(self) -> None:
        """Place the scenario's explicit accounts (wallets and protocol positions).

        Positions are valued at the initial prices of :class:`_Prices`; one that would be
        liquidatable at once (or needs a price no oracle has yet) is refused with a
        :class:`~marginsim.config.ScenarioError`.
        """
        for k, acc in enumerate(self.scenario.accounts):
            holder = self.ledger.add_holder(f"account:{acc.id}")
            for symbol, amount in acc.wallet.items():
                self._endow(holder, 1, symbol, amount)
            if acc.protocol is None:
                continue
            for symbol, amount in acc.collateral.items():
                self._endow(holder, 1, symbol, amount)
            collateral = {s: self._units(s, a) for s, a in acc.collateral.items()}
            debt = {s: self._units(s, a) for s, a in acc.debt.items()}
            try:
                if acc.protocol in self.lending:
                    # A replayed position may already sit beyond its LTV; it must be healthy.
                    self.lending[acc.protocol].open_position(
                        holder, collateral, debt, enforce_ltv=False
                    )
                else:
                    result = self.cdps[acc.protocol].open_position(
                        holder, sum(collateral.values()), sum(debt.values())
                    )
                    if not result.ok:
                        raise ValueError(result.reason)
            except ValueError as exc:
                raise ScenarioError([(f"accounts[{k}]", str(exc))], "initial accounts") from None
        self.prices.started()

    # ================================================================ the step
    def step(self) -> None:
        """Run one step: the seven phases of DESIGN.md section 4, in order."""
        self.step_index += 1
        self.view.step = self.step_index
        self.engine.step = self.step_index
        for venue in (
            *self.amms,
            *self.lending.values(),
            *self.cdps.values(),
            *self.perps.values(),
        ):
            venue.step = self.step_index
        self.trades_at_step_start = self.engine.n_trades
        self.phase_exogenous()
        self.phase_oracles()
        self.phase_accrual()
        self.phase_agents()
        self.phase_liquidations()
        self.phase_settlement()
        self.phase_record()

    def phase_exogenous(self) -> None:
        """1. The index moves to its next value; scheduled shocks fire."""
        t = self.step_index
        self.index_price = float(self.index_path[t + 1])
        for maker in self.market_makers:
            if maker.size_factor < 1.0 and t >= maker.restore_step:
                maker.size_factor = 1.0
        for shock in self.shocks_by_step.get(t, []):
            self._fire_shock(shock)
        if t in self.shocks_by_step:
            self.contagion.observe(t)

    def _fire_shock(self, shock: ShockConfig) -> None:
        row: dict[str, object] = {
            "step": self.step_index,
            "kind": shock.kind,
            "size": shock.size,
            "instrument": shock.instrument or "",
            "filled": 0.0,
            "avg_price": math.nan,
            "mid_before": math.nan,
            "mid_after": math.nan,
        }
        if shock.kind == "sell_order":
            ins = self.instrument_index[shock.instrument]
            spec = self.engine.specs[ins]
            side = -1 if shock.size > 0 else 1
            lots = int(abs(shock.size) / spec.lot + 1e-9)
            if side < 0:
                self.ledger.mint(
                    self.shock_holder,
                    spec.base_asset,
                    lots * spec.base_units_per_lot,
                    "exogenous sell-order shock",
                )
            else:
                # An outside buyer brings enough quote to pay up to 10x the index.
                need = int(
                    lots * (10 * self.index_price / spec.tick + 1) * spec.quote_units_per_tick_lot
                )
                self.ledger.mint(
                    self.shock_holder, spec.quote_asset, need, "exogenous buy-order shock"
                )
            row["mid_before"] = _nan_if_none(self.engine.mid_price(ins))
            start = self.engine.n_trades
            batch = OrderBatch.build(ins, side, int(OrderKind.MARKET), 0, lots, self.shock_holder)
            self._submit(batch)
            fills = self.engine.trade_arrays(start)
            filled_lots = int(fills["qty_lots"].sum())
            row["filled"] = filled_lots * spec.lot
            if filled_lots:
                notional = float((fills["price_ticks"] * fills["qty_lots"]).sum())
                row["avg_price"] = notional / filled_lots * spec.tick
            row["mid_after"] = _nan_if_none(self.engine.mid_price(ins))
        elif shock.kind == "bridge_failure":
            bridge = self.bridges[str(shock.bridge)]
            row["instrument"] = bridge.name
            row["filled"] = bridge.fail(shock.size, self.step_index) / 10 ** (
                self.ledger.assets[bridge.asset].decimals
            )
        elif shock.kind == "liquidity_withdrawal":
            for maker in self.market_makers:
                maker.size_factor = 1.0 - shock.size
                maker.restore_step = self.step_index + shock.duration_steps
        self.shock_rows.append(row)

    def phase_oracles(self) -> None:
        """2. Oracles observe the market and the index; perp venues recompute their marks."""
        self.oracles.update_all(self.step_index, self.quotes)
        for venue in self.perps.values():
            venue.update_mark(self.step_index)
        # Liquidation policies read this step's prices (no-op for static ones).
        for pool in self.lending.values():
            pool.update_policy(self.step_index)
        for venue in self.perps.values():
            venue.update_policy(self.step_index)

    def phase_accrual(self) -> None:
        """3. Lending interest, CDP stability fees and (when an interval ends) perp funding."""
        seconds = self.scenario.run.step_seconds
        for protocol in (*self.lending.values(), *self.cdps.values(), *self.perps.values()):
            protocol.accrue(self.step_index, seconds)
        for bridge in self.bridges.values():
            bridge.tick(self.step_index)
        self.contagion.begin_step()

    def _submit(
        self, batch: OrderBatch, margin_checked: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Send a batch to the engine, in order; perp venues margin-check and settle theirs.

        Orders on a perp book first pass the venue's pre-trade margin check (unless
        ``margin_checked``, for the venue's own liquidation orders); a refused order is not
        sent and reports status :data:`MARGIN_REFUSED`. The fills of perp books are then
        applied to the venues' positions.
        """
        n = len(batch)
        if n == 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z, z
        if not self.perps:
            return self.engine.submit_batch(
                batch.instrument,
                batch.side,
                batch.kind,
                batch.price_ticks,
                batch.qty_lots,
                batch.account,
                batch.order_ref,
            )
        keep = np.ones(n, dtype=bool)
        table = self._venue_of_instrument
        known = (batch.instrument >= 0) & (batch.instrument < table.shape[0])
        # An unknown instrument is not a perp: the engine rejects it with its reason.
        venue_of = np.where(known, table[np.where(known, batch.instrument, 0)], -1)
        if not margin_checked and (venue_of >= 0).any():
            is_order = batch.kind != int(OrderKind.CANCEL)
            for v, venue in enumerate(self.perps.values()):
                rows = np.flatnonzero((venue_of == v) & is_order)
                if rows.size:
                    ok, _ = venue.check_orders(
                        batch.instrument[rows],
                        batch.side[rows],
                        batch.kind[rows],
                        batch.price_ticks[rows],
                        batch.qty_lots[rows],
                        batch.account[rows],
                    )
                    keep[rows[~ok]] = False
        start = self.engine.n_trades
        sent = np.flatnonzero(keep)
        result = self.engine.submit_batch(
            batch.instrument[sent],
            batch.side[sent],
            batch.kind[sent],
            batch.price_ticks[sent],
            batch.qty_lots[sent],
            batch.account[sent],
            batch.order_ref[sent],
        )
        if self.engine.n_trades > start and (venue_of >= 0).any():
            tape = self.engine.trade_arrays(start)
            for venue in self.perps.values():
                venue.apply_tape(tape)
        if sent.size == n:
            return tuple(result)  # type: ignore[return-value]
        out = [np.zeros(n, dtype=np.int64) for _ in range(4)]
        out[1][:] = MARGIN_REFUSED
        for full, part in zip(out, result, strict=True):
            full[sent] = part
        return out[0], out[1], out[2], out[3]

    def phase_agents(self) -> None:
        """4. Market makers requote, then traders act in a shuffled, seeded order.

        Each agent decides from the market as the previous agents left it, and its orders
        are submitted before the next agent acts. A lending-looper population's activation
        is three calls in a row (:meth:`_activate_loopers`); an arbitrageur's is its book
        orders, then its swaps (:meth:`_execute_swaps`).
        """
        # Makers that read the liquidation map share one scan per asset per step: the
        # prices it depends on (oracles, marks) do not move within the agents phase.
        scans: dict[str, list[LiquidationPrices]] = {}
        for maker in self.market_makers:
            if maker.config.liquidation_map_aware:
                symbol = self.scenario.instruments[maker.instrument].base
                if symbol not in scans:
                    scans[symbol] = self.protocols_view.liquidation_prices(symbol)
                maker.liquidation_parts = scans[symbol]
        for maker in self.market_makers:
            self._submit(maker.withdraw())
            batch = maker.act(self.view)
            order_id, status, _, resting = self._submit(batch)
            maker.on_results(batch, order_id, status, resting)
        order = list(self.traders)
        self.random.shuffle(order)
        for trader in order:
            if isinstance(trader, LendingLoopers):
                self._activate_loopers(trader)
                continue
            if isinstance(trader, LeveragedTraders):
                self._activate_leveraged(trader)
                continue
            if isinstance(trader, OracleManipulator):
                self._activate_manipulator(trader)
                continue
            if isinstance(trader, Arbitrageur):
                self._activate_arbitrageur(trader)
                continue
            batch = trader.act(self.view)
            order_id, status, _, resting = self._submit(batch)
            trader.on_results(batch, order_id, status, resting)
        # Liquidation bots that sell seized collateral gradually sell this step's slices
        # after the traders (they are not in the shuffle, so runs without gradual selling
        # keep their activation order).
        for bot in self.liquidators:
            if bot.tranches:
                self._submit(bot.act(self.view))

    def _activate_arbitrageur(self, trader: Arbitrageur) -> None:
        """An arbitrageur's turn: its book orders first, then its swaps into the pool."""
        plan = trader.plan(self.view)
        order_id, status, _, resting = self._submit(plan.orders)
        trader.on_results(plan.orders, order_id, status, resting)
        refused = len(plan.swaps) - self._execute_swaps(trader.holder, plan.swaps)
        trader.swaps_refused += refused
        self.swaps_refused += refused

    def _execute_swaps(self, holder: int, swaps: tuple[SwapCall, ...]) -> int:
        """Route swaps in order through ``pool.swap``; returns how many executed.

        A refused swap (e.g. its ``min_out`` no longer met) changes nothing.
        """
        done = 0
        for call in swaps:
            result = self.amm_by_id[call.pool].swap(holder, call.side, call.amount_in, call.min_out)
            done += result.ok
        return done

    def _activate_loopers(self, loopers: LendingLoopers) -> None:
        """One activation of a looper population: lend, trade, lend again, in this order.

        Their borrows and withdrawals run first, so the market orders that follow spend
        what is now in the wallets; then the bought collateral is supplied and sale proceeds
        repay debt. Refused lending actions are skipped and counted.
        """
        refused = self._execute_lending(loopers.plan_lending(self.view, self.protocols_view))
        batch = loopers.act(self.view)
        order_id, status, _, resting = self._submit(batch)
        loopers.on_results(batch, order_id, status, resting)
        refused += self._execute_lending(loopers.after_trades(self.view, self.protocols_view))
        loopers.refused_actions += refused
        self.lending_actions_refused += refused

    def _activate_leveraged(self, traders: LeveragedTraders) -> None:
        """One activation of the leveraged traders: lend, deposit, trade, withdraw, repay.

        Supplies and borrows run first and the borrowed stablecoin is deposited as perp
        margin, so the market orders that follow are margin-checked against it; then the
        margin freed by reduces and closes comes back to the wallets and repays debt.
        Refused actions are skipped and counted.
        """
        plan = traders.plan(self.view, self.protocols_view)
        refused = self._execute_lending(plan.lending)
        refused += self._execute_margin(plan.margin)
        batch = traders.act(self.view)
        order_id, status, _, resting = self._submit(batch)
        traders.on_results(batch, order_id, status, resting)
        refused += self._execute_margin(traders.after_trades(self.view, self.protocols_view))
        refused += self._execute_lending(traders.settle(self.view, self.protocols_view))
        traders.refused_actions += refused
        self.leveraged_actions_refused += refused

    def _execute_margin(self, actions: PerpMarginActions) -> int:
        """Run perp margin deposits and withdrawals in order; returns how many were refused.

        Consecutive deposits go to the venue's ``deposit_many`` (the same outcome as single
        deposits in row order). A ``WITHDRAW`` row takes ``min(amount, withdrawable)``;
        nothing withdrawable counts as refused.
        """
        n = len(actions)
        if not n:
            return 0
        venue = self.perps[actions.venue]
        kinds = actions.kind
        change = np.ones(n, dtype=bool)
        change[1:] = kinds[1:] != kinds[:-1]
        starts = np.flatnonzero(change).tolist() + [n]
        refused = 0
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            if kinds[lo] == PerpMarginAction.DEPOSIT:
                ok = venue.deposit_many(actions.holder[lo:hi], actions.amount[lo:hi])
                refused += int(np.count_nonzero(~ok))
                continue
            for holder, amount in zip(
                actions.holder[lo:hi].tolist(), actions.amount[lo:hi].tolist(), strict=True
            ):
                units = min(amount, venue.withdrawable_units(holder))
                ok = units > 0 and venue.withdraw(holder, units).ok
                refused += not ok
        return refused

    def _activate_manipulator(self, manipulator: OracleManipulator) -> None:
        """The manipulator's activation: lend (supply and borrow), trade (pump), note results."""
        self._execute_lending(manipulator.plan_lending(self.view, self.protocols_view))
        manipulator.record_borrow(self.view, self.protocols_view)
        batch = manipulator.act(self.view)
        order_id, status, _, resting = self._submit(batch)
        manipulator.on_results(batch, order_id, status, resting)
        manipulator.after_trades(self.view)

    def _execute_lending(self, actions: LendingActions) -> int:
        """Run lending actions in order through the pool; returns how many it refused.

        Consecutive rows of one kind and symbol (a population's block of borrows, say) go
        to the pool's batch method (``supply_many``, ``borrow_many``, ``withdraw_many``,
        ``repay_many``), which gives every row exactly the outcome of the single call made in
        row order, without the single calls' per-row ``Fraction`` arithmetic. A ``REPAY``
        row repays ``min(amount, owed)`` (refused when nothing is owed).
        """
        n = len(actions)
        if not n:
            return 0
        pool = self.lending[actions.pool]
        kinds, symbols = actions.kind, actions.symbol
        # Start of every run of equal (kind, symbol).
        change = np.ones(n, dtype=bool)
        change[1:] = (kinds[1:] != kinds[:-1]) | (symbols[1:] != symbols[:-1])
        starts = np.flatnonzero(change).tolist() + [n]
        refused = 0
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            kind, symbol = int(kinds[lo]), str(symbols[lo])
            holders, amounts = actions.holder[lo:hi], actions.amount[lo:hi]
            if kind == LendingAction.SUPPLY:
                refused += pool.supply_many(holders, symbol, amounts).refused
            elif kind == LendingAction.WITHDRAW:
                refused += pool.withdraw_many(holders, symbol, amounts).refused
            elif kind == LendingAction.BORROW:
                refused += pool.borrow_many(holders, symbol, amounts).refused
            else:
                refused += self._repay_run(pool, holders, symbol, amounts)
        return refused

    @staticmethod
    def _repay_run(pool: LendingPool, holders: np.ndarray, symbol: str, amounts: np.ndarray) -> int:
        """Repay ``min(amount, owed)`` per row in order; returns how many were refused."""
        if np.unique(holders).size != holders.size:
            # A holder twice: its second row must see the debt its first left, row by row.
            refused = 0
            for holder, amount in zip(holders.tolist(), amounts.tolist(), strict=True):
                owed = pool.debt_units(holder, symbol)
                refused += not (owed and pool.repay(holder, symbol, min(amount, owed)).ok)
            return refused
        # Distinct holders: each row's debt is what it was before the run.
        owed = [pool.debt_units(h, symbol) for h in holders.tolist()]
        owing = np.array([o > 0 for o in owed], dtype=bool)
        capped = np.array(
            [min(a, o) for a, o in zip(amounts.tolist(), owed, strict=True) if o > 0],
            dtype=np.int64,
        )
        done = pool.repay_many(holders[owing], symbol, capped)
        return int(np.count_nonzero(~owing)) + done.refused

    def phase_liquidations(self) -> None:
        """5. Liquidators compete for unhealthy accounts, in rounds, within the step.

        CDP auctions first advance to this step (prices decay, stale auctions reset). Then,
        each round, the liquidators act in a freshly shuffled (seeded) order; the collateral
        they seize is sold on the shared book at once, which moves the price the oracles and
        the next accounts' health read. Oracles re-observe the market between rounds, so a
        protocol whose oracle reads the book sees the crash it is causing. Rounds repeat
        while any liquidation happened, up to ``run.max_liquidation_rounds``. Market makers
        do not requote between rounds, so forced sales can exhaust depth.
        """
        for cdp in self.cdps.values():
            cdp.tick(self.step_index)
        self.liquidation_rounds = 0
        self.liquidations_this_step = 0
        self.liquidation_calls = 0
        self.gas_paid_units = 0
        if not self.liquidators and not self.perps:
            return
        protocols = {**self.lending, **self.cdps, **self.perps}
        while self.liquidation_rounds < self.scenario.run.max_liquidation_rounds:
            self.liquidation_round_marks.mark(protocols, self.step_index, self.liquidation_rounds)
            if self.liquidation_rounds:
                self.oracles.update_all(self.step_index, self.quotes)
                for venue in self.perps.values():
                    venue.update_mark(self.step_index)
            done = sum(self._liquidate_perps(venue) for venue in self.perps.values())
            if done:
                self.contagion.observe(self.step_index)
            done += self._liquidator_round()
            if done == 0:
                break
            self.liquidation_rounds += 1
            self.liquidations_this_step += done

    def _liquidator_round(self) -> int:
        """One round of the liquidation bots; returns the liquidations and takes done.

        Bots act in a freshly shuffled, seeded order. With ``run.block_space`` limited, the
        round holds that many calls: bots are included by gas bid (highest first; the
        shuffle breaks ties), each included call costs its bot its bid (paid to
        ``chain:block_producer``; a bot that cannot pay is left out), and a call takes its
        place even when the protocol then refuses it, as a failed transaction does.
        """
        order = list(self.liquidators)
        self.random.shuffle(order)
        space = self.scenario.run.block_space
        if space:
            order.sort(key=lambda bot: -bot.gas_bid_units)  # stable: ties keep the shuffle
        gas_asset = (
            self.ledger.asset_id(self.scenario.agents.liquidators.gas_asset) if space else -1
        )
        done = used = 0
        for liquidator in order:
            for call in liquidator.plan(self.view, self.protocols_view):
                if space:
                    if used == space:
                        return done
                    used += 1
                    fee = liquidator.gas_bid_units
                    if self.ledger.balance(liquidator.holder, gas_asset) < fee:
                        break
                    self.ledger.transfer(liquidator.holder, self.block_producer, gas_asset, fee)
                    self.gas_paid_units += fee
                self.liquidation_calls += 1
                done += self._execute(liquidator, call)
                self.contagion.observe(self.step_index)
        return done

    def _liquidate_perps(self, venue: PerpVenue) -> int:
        """One round of a perp venue's own liquidation engine; returns positions settled.

        The engine takes over every liquidatable position, the accounts' resting perp
        orders are cancelled, its closing orders trade on the shared book, and what the book
        did not take is auto-deleveraged when the venue allows it.
        """
        orders = venue.begin_liquidations(self.step_index)
        if len(orders.qty_lots) == 0 and not len(orders.liquidated_accounts):
            return 0
        for account in orders.liquidated_accounts.tolist():
            for instrument in venue.instruments.tolist():
                self.engine.cancel_all(int(account), int(instrument))
        self._submit(
            OrderBatch.build(
                orders.instrument,
                orders.side,
                orders.kind,
                orders.price_ticks,
                orders.qty_lots,
                orders.account,
            ),
            margin_checked=True,
        )
        return venue.finish_liquidations(self.step_index)

    def _execute(
        self,
        liquidator: Liquidator,
        call: LiquidateCall | BarkCall | TakeCall,
    ) -> int:
        """Route one liquidator call to its protocol and sell what it seized.

        Returns 1 for a liquidation or an auction take, else 0 (a bark only starts an
        auction; a refused call, or a flash loan that could not be repaid, changes nothing).
        """
        if isinstance(call, LiquidateCall):
            pool = self.lending[call.protocol]
            collateral_asset = pool.reserve(call.collateral_symbol).asset

            def liquidate_and_sell() -> None:
                result = pool.liquidate(
                    liquidator.holder,
                    call.account,
                    call.debt_symbol,
                    call.collateral_symbol,
                    call.repay_units,
                )
                if not result.ok:
                    raise _Refused(result.reason)
                if not result.received_receipt:
                    asset, units = self._redeem_claims(
                        liquidator.holder, collateral_asset, result.liquidator_received
                    )
                    self._submit(liquidator.after(self.view, asset, units, call.flash))

            if not call.flash:
                try:
                    liquidate_and_sell()
                except _Refused:
                    return 0
            else:
                # Everything the action may touch reverts with the loan if it is not repaid.
                others = [p for p in self.lending.values() if p is not pool]
                loan = pool.flash_loan(
                    liquidator.holder,
                    call.debt_symbol,
                    call.repay_units,
                    liquidate_and_sell,
                    participants=[
                        self.engine,
                        *self.amms,
                        *others,
                        *self.cdps.values(),
                        *self.perps.values(),
                    ],
                )
                if not loan.ok:
                    return 0
            liquidator.liquidations += 1
            return 1
        if isinstance(call, BarkCall):
            self.cdps[call.protocol].bark(call.account, liquidator.holder)
            return 0
        cdp = self.cdps[call.protocol]
        taken = cdp.take(
            call.auction_id, liquidator.holder, call.max_collateral_units, call.max_price
        )
        if not taken.ok:
            return 0
        liquidator.takes += 1
        self._submit(liquidator.after(self.view, cdp.collateral_asset, taken.collateral_units))
        return 1

    def _redeem_claims(self, holder: int, asset: int, units: int) -> tuple[int, int]:
        """Redeem seized receipt tokens at their pool, as far as its liquidity allows.

        A liquidator that seized another pool's receipt token withdraws the underlying
        (through chains of receipt tokens) so that it can sell it; what the issuer's
        liquidity cannot pay stays with the liquidator as the token. Returns the asset and
        units to sell.
        """
        while asset in self.receipt_of_asset and units > 0:
            pool, underlying = self.receipt_of_asset[asset]
            worth = units * pool.liquidity_index_ray(underlying) // RAY
            amount = min(worth, pool.available_units(underlying))
            if amount <= 0 or not pool.withdraw(holder, underlying, amount).ok:
                return asset, 0
            asset, units = pool.reserve(underlying).asset, amount
        return asset, units

    def phase_settlement(self) -> None:
        """6. Bad debt is recognised (absorbed by reserves, then suppliers); invariants.

        Lending pools write off the debt of accounts left without collateral; CDPs record
        bad debt when an auction ends short, inside the liquidation phase. A write-off
        lowers the pool's liquidity index, so every other pool that accepts its receipt token
        sees its accounts' collateral fall in the next liquidation phase (mechanical
        contagion); the contagion monitor then records bad debt, defaults, DebtRank and, on a
        new default, the Eisenberg-Noe clearing (:mod:`marginsim.protocols.contagion`).
        """
        for pool in self.lending.values():
            pool.settle(self.step_index)
        self.contagion.settle(self.step_index)
        if self.check_invariants:
            self._check_invariants(f"step {self.step_index}")

    def phase_record(self) -> None:
        """7. Metrics of this step are read and stored (the liquidation map every k steps)."""
        self.recorder.record(self, self.step_index)
        self.liquidation_map_recorder.record(self, self.step_index)

    def _check_invariants(self, where: str) -> None:
        try:
            self.ledger.check_conservation()
            self.engine.check_invariants()
            for cdp in self.cdps.values():
                cdp.check_invariants()
            for venue in self.perps.values():
                venue.check_invariants()
        except (ConservationError, AssertionError) as exc:
            raise InvariantViolation(f"invariant violated after {where}: {exc}") from exc

    # ================================================================ outputs
    def run(self) -> None:
        """Run every step of the scenario."""
        for _ in range(self.scenario.run.steps - self.step_index - 1):
            self.step()

    def network_tables(self) -> dict[str, pd.DataFrame]:
        """The protocol network's tables at the end of the run.

        ``network_edges`` (source, target, kind, weight; a collateral weight is the largest
        value posted as collateral along that edge during the run, see
        :meth:`ContagionMonitor.exposures`; other kinds weigh 1), ``network_nodes``
        (node, type, bad_debt, defaulted, default_step, debtrank, default_wave),
        ``network_clearing`` (Eisenberg-Noe clearing at each new default),
        ``network_accounts`` and ``network_collateral`` (the cross-protocol risk monitor),
        and with bridges ``bridge_events``.
        """
        monitor = self.contagion
        exposures = np.maximum(monitor.peak_exposure, monitor.exposures())
        pos = {n: k for k, n in enumerate(monitor.nodes)}
        for edge in self.network.edges(EdgeKind.COLLATERAL):
            if edge.source in pos and edge.target in pos:
                value = float(exposures[pos[edge.source], pos[edge.target]])
                self.network.set_weight(edge.source, edge.target, EdgeKind.COLLATERAL, value)
        tables = {
            "network_edges": self.network.edges_frame(),
            "network_nodes": monitor.nodes_frame(),
            "network_clearing": monitor.clearing_frame(),
            "network_accounts": monitor.accounts_frame(),
            "network_collateral": monitor.collateral_frame(),
        }
        if self.bridges:
            tables["bridge_events"] = _concat(
                [b.events_frame() for b in self.bridges.values()], BRIDGE_COLUMNS
            )
        return tables

    def metrics_frame(self) -> pd.DataFrame:
        """Recorded per-step metrics."""
        return self.recorder.frame()

    def event_tables(self) -> dict[str, pd.DataFrame]:
        """Event tables by name.

        ``trades``, ``swaps``, ``shocks``, ``mints`` (every mint and burn, with its reason),
        ``liquidations`` (lending liquidations, CDP auction takes and perp liquidation-engine
        closes, with the liquidation ``round`` of their step, 0-based), ``bad_debt``,
        ``liquidation_map`` (every ``metrics.liquidation_map_every`` steps, see
        :class:`~marginsim.metrics.LiquidationMapRecorder`),
        ``flash_loans``, ``auctions``, ``holders``, with a non-static liquidation policy
        ``policy_events`` (:meth:`policy_events`), with an oracle manipulator
        ``oracle_attacks`` (:data:`~marginsim.agents.manipulator.ATTACK_COLUMNS`) and with
        liquidation hunters ``hunter_attacks``. Holder ids in the other tables (buyer,
        seller, holder, account, liquidator) resolve to names through ``holders``
        (``holder``, ``name``).
        """
        journal = self.ledger.journal
        mints = pd.DataFrame(
            {
                "holder": np.array([h for h, _, _, _ in journal], dtype=np.int64),
                "asset": [self.ledger.assets[a].symbol for _, a, _, _ in journal],
                "amount_units": np.array([x for _, _, x, _ in journal], dtype=np.int64),
                "reason": [r for _, _, _, r in journal],
            }
        )
        swaps = [p.swaps_frame() for p in self.amms]
        lending, cdps = list(self.lending.values()), list(self.cdps.values())
        marks = self.liquidation_round_marks
        frames = [
            (n, p.liquidations_frame()) for n, p in (*self.lending.items(), *self.perps.items())
        ]
        frames += [(n, c.liquidations()) for n, c in self.cdps.items()]
        liquidations = [f.assign(round=marks.rounds(n, f)) for n, f in frames]
        bad_debt = (
            [
                p.bad_debt_frame().rename(
                    columns={"covered_by_reserves": "covered", "borne_by_suppliers": "uncovered"}
                )
                for p in lending
            ]
            + [c.bad_debt() for c in cdps]
            + [v.bad_debt_frame() for v in self.perps.values()]
        )
        tables = {
            "trades": self.engine.trades_frame(),
            "swaps": _concat(swaps, _SWAP_COLUMNS),
            "shocks": pd.DataFrame(self.shock_rows, columns=list(_SHOCK_COLUMNS)).astype(
                _SHOCK_COLUMNS
            ),
            "mints": mints,
            "liquidations": _concat(liquidations, {**LIQUIDATION_COLUMNS, "round": np.int64}),
            "bad_debt": _concat(bad_debt, BAD_DEBT_COLUMNS),
            "flash_loans": _concat([p.flash_loans_frame() for p in lending], _FLASH_LOAN_COLUMNS),
            "auctions": _concat([c.auctions() for c in cdps], AUCTION_COLUMNS),
            "adl": _concat([v.adl_frame() for v in self.perps.values()], PerpVenue.ADL_COLUMNS),
            "funding": _concat(
                [v.funding_frame() for v in self.perps.values()], PerpVenue.FUNDING_COLUMNS
            ),
            "liquidation_map": self.liquidation_map_recorder.frame(),
            "holders": pd.DataFrame(
                {
                    "holder": np.arange(self.ledger.n_holders, dtype=np.int64),
                    "name": self.ledger.holder_names(),
                }
            ),
        }
        tables |= self.network_tables()
        # Liquidation policies' and adversaries' tables exist only in runs that have them.
        if any(v.policy is not None for v in (*self.lending.values(), *self.perps.values())):
            tables["policy_events"] = self.policy_events()
        if self.hunters:
            tables["hunter_attacks"] = _concat(
                [h.attacks_frame() for h in self.hunters], HUNT_COLUMNS
            )
        if self.manipulator is not None:
            tables["oracle_attacks"] = pd.DataFrame(
                self.manipulator.rows, columns=list(ORACLE_ATTACK_COLUMNS)
            ).astype(ORACLE_ATTACK_COLUMNS)
        return tables

    def policy_events(self) -> pd.DataFrame:
        """The ``policy_events`` table: rows of every liquidation policy.

        Columns: :data:`~marginsim.protocols.policies.POLICY_EVENT_COLUMNS`.

        Empty (and typed) when every protocol uses the static rules.
        """
        rows = [
            row
            for venue in (*self.lending.values(), *self.perps.values())
            if venue.policy is not None
            for row in venue.policy.rows
        ]
        frame = pd.DataFrame(rows, columns=list(POLICY_EVENT_COLUMNS))
        return frame.astype(POLICY_EVENT_COLUMNS)


class _IndexRate:
    """Exchange rate of a receipt token: its pool's liquidity index, exact, read live."""

    def __init__(self, pool: LendingPool, symbol: str) -> None:
        self.pool = pool
        self.symbol = symbol

    def __call__(self) -> Fraction:
        return Fraction(self.pool.liquidity_index_ray(self.symbol), RAY)


def _concat(frames: list[pd.DataFrame], columns: dict[str, object]) -> pd.DataFrame:
    """Concatenate per-venue tables into ``columns``; empty and typed when there are none."""
    if frames:
        return pd.concat([f[list(columns)] for f in frames], ignore_index=True).astype(columns)
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in columns.items()})


#: Columns of the ``bad_debt`` table: ``covered`` by protocol reserves or surplus,
#: ``uncovered`` borne by suppliers (lending) or left as system debt (CDP).
_FLASH_LOAN_COLUMNS: dict[str, object] = {
    "step": np.int64,
    "protocol": object,
    "holder": np.int64,
    "asset": object,
    "amount": np.int64,
    "fee": np.int64,
    "repaid": bool,
}
_SWAP_COLUMNS: dict[str, object] = {
    "step": np.int64,
    "pool": object,
    "holder": np.int64,
    "side": np.int64,
    "amount_in": np.int64,
    "amount_out": np.int64,
    "price": np.float64,
}


#: Columns of the ``shocks`` event table: when and what fired, and for an exogenous order how
#: much filled, at what average price, and the book mid just before and just after it.
_SHOCK_COLUMNS = {
    "step": np.int64,
    "kind": object,
    "size": np.float64,
    "instrument": object,
    "filled": np.float64,
    "avg_price": np.float64,
    "mid_before": np.float64,
    "mid_after": np.float64,
}


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _driver_params(model: str, params: dict[str, object]) -> dict[str, object]:
    """The exogenous config fields each driver takes."""
    keep = {
        "gbm": ("initial", "drift", "volatility"),
        "jump": ("initial", "drift", "volatility", "jump_intensity", "jump_mean", "jump_std"),
        "garch": ("initial", "drift", "volatility", "alpha", "beta"),
        "path": ("initial", "values", "segments"),
        "replay": ("file", "column", "start_row", "scale"),
    }[model]
    out = {k: params[k] for k in keep if k in params}
    if model == "replay":
        out["path"] = out.pop("file")
    return out
