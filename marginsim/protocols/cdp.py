"""CDP stablecoin protocol (Maker semantics): vaults, stability fee, Dutch collateral auctions.

One :class:`CdpProtocol` is one collateral type of a Maker-like system (an ``ilk``): holders
lock the collateral asset in a vault and draw the stablecoin against it; a rate accumulator
charges the stability fee; unsafe vaults are liquidated by descending-price auctions
(Liquidations 2.0, the ``Clipper``); unraised debt becomes recorded bad debt. Sources: the
Maker protocol's ``Vat``, ``Jug``, ``Dog``, ``Clipper`` and ``abaci`` contracts, and
GLOSSARY.md (CDP).

Units. Amounts are integer ledger units of their asset; prices are stablecoin per whole
collateral token (human units), read from the ``price`` reference of :class:`CdpConfig` through
a :class:`PriceFeed`. A price that is missing, non-finite or not positive counts as "no price":
mints and withdrawals that need one are refused and no liquidation starts.

Holders. The protocol registers ``{name}:vaults`` (collateral locked in vaults),
``{name}:auctions`` (collateral under auction) and ``{name}:surplus`` (the surplus buffer:
stability fees and penalties in the stablecoin, and collateral of expired auctions).

Stability fee (Maker's ``Jug.drip`` and ``Vat.fold``). The fee is an effective annual rate:
each step multiplies the accumulator ``rate`` by ``g = (1 + stability_fee) ** (step_seconds /
31_536_000)`` (a 365-day year, as Maker sets ``duty``). A vault stores its debt twice: the
*booked* debt, an integer number of stablecoin units that every check, repayment and auction
uses, and a normalised debt ``art = booked / rate`` set at every draw and repayment. At each
accrual the booked debt becomes ``max(booked, ceil(art * rate))``: the exact compounded debt
since the vault's last action, rounded up. The rounding never favours the user and does not
accumulate (at most one unit per vault, crystallised at the holder's own next draw or
repayment). **Fee representation:** the fee is minted at accrual, as Maker's ``fold`` credits
the ``Vow``: the sum of the vaults' booked-debt increases is minted to ``{name}:surplus`` with
reason ``"stability fee"``. Every unit of debt is therefore matched by one unit of stablecoin in
existence, which is exact with integers::

    stablecoin minted - burned by this protocol == vault debt + auction debt + system debt

Repayment burns exactly the amount repaid (reason ``"vault repayment"``); a draw mints exactly
the amount drawn (reason ``"vault draw"``). Accrual of a step already accrued is a no-op: each
call compounds ``step - last_step`` steps, the protocol being created before step 0.

Safety. Collateral value = collateral units * price (in stablecoin units); collateralisation
= value / debt (infinite without debt). A vault is unsafe when value < liquidation_ratio *
debt. A draw or a withdrawal must leave value >= liquidation_ratio * debt; a draw must also keep
the total vault debt within ``debt_ceiling`` (rounded down to units; 0: no ceiling). Accrual
may push the total above the ceiling (as in Maker, the ceiling only limits new debt).

Auctions (``Dog.bark`` and ``Clipper``). :meth:`CdpProtocol.bark` starts an auction of an
unsafe vault: all its collateral moves to ``{name}:auctions``, its debt ``d`` is cleared from
the vault and becomes auction debt (system debt pending the auction), and the auction's
``tab = d + ceil(d * penalty)`` (the penalty computed exactly from the decimal value of the
config, rounded up). Maker's keeper incentives (``tip``, ``chip``), ``hole`` limits and
``dust`` rules are not modelled. The price path is Maker's ``StairstepExponentialDecrease``
with a stair of one step::

    top      = oracle price at (re)start * start_multiplier
    price(k) = top * step_decay ** k,   k = current step - step of the (re)start

The price is quoted to 12 significant digits (rounded to nearest), and take amounts are
computed exactly (rational arithmetic) from that decimal price.

An auction *needs a reset* (``Clipper.redo``) when ``k > reset_after_steps`` or
``price(k) < reset_below * top`` (both strict, as Maker's ``tail`` and ``cusp``); it cannot be
taken until :meth:`CdpProtocol.tick` restarts it from a fresh ``top`` (then ``k = 0`` again).
**End rule without bidders:** an auction that needs a reset after ``max_resets`` resets (a
constructor argument, default 3) *expires* instead: its collateral goes to ``{name}:surplus``
(protocol-owned, like Maker's ``yank``) and its remaining debt becomes bad debt. With no
price, a reset waits (and the auction cannot be taken meanwhile).

Takes (``Clipper.take``). At the current price, a keeper buys ``slice = min(lot,
max_collateral_units)`` for ``owe = ceil(slice * price)`` stablecoin units; if that would cover
the remaining tab, the keeper pays exactly the tab and gets ``floor(tab / price)`` units (at
least one): rounding is against the keeper. The keeper pays from its own wallet (a keeper
without enough stablecoin cannot take). **Proceeds split:** the payment covers auction debt
first, which is burned (reason ``"auction proceeds"``); the rest, the penalty, is transferred
to ``{name}:surplus``. When the tab is fully raised the remaining collateral returns to the
owner's wallet. When the collateral runs out first, the unraised debt (not the unraised
penalty, which was never minted) is bad debt.

Bad debt. A shortfall is recorded in :meth:`CdpProtocol.bad_debt`, then covered at once by
the surplus buffer (burning up to the whole shortfall, reason ``"bad debt covered by
surplus"``); what the surplus cannot cover is *system debt* (Maker's ``sin``), healed by later
surplus inflows (fees and penalties) as soon as they arrive. Debt is never dropped:
:meth:`CdpProtocol.check_invariants` verifies ``drawn + fees - repaid - debt raised at auction
== vault debt + auction debt + bad debt`` exactly.

In the model's step (DESIGN.md section 4): set :attr:`CdpProtocol.step`, call
:meth:`CdpProtocol.accrue` in the accrual phase, and :meth:`CdpProtocol.tick` at the start of
the liquidation phase, before keepers bark and take; metrics are read in the record phase.

Atomicity. Every vault action and take either completes or is refused with a reason and
changes nothing. :meth:`CdpProtocol.snapshot` and :meth:`CdpProtocol.restore` capture the
protocol's own state; pair them with :meth:`Ledger.snapshot` / :meth:`Ledger.restore`.

Floats. Prices, values and the accumulator are float64 (relative error about 1e-16); every
amount that reaches the ledger is an integer rounded by the rules above. Booked debts stay
exact below 2**53 units (9e9 whole tokens at 6 decimals).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from fractions import Fraction
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd

from marginsim.config import CdpConfig
from marginsim.ledger import Ledger
from marginsim.protocols.events import (
    BAD_DEBT_COLUMNS,
    LIQUIDATION_COLUMNS,
    AccountExposures,
    LiquidationPrices,
)

__all__ = [
    "SECONDS_PER_YEAR",
    "AuctionStart",
    "AuctionState",
    "AuctionStatus",
    "CdpProtocol",
    "CdpSnapshot",
    "PriceFeed",
    "TakeResult",
    "TickResult",
    "UnsafeVaults",
    "VaultResult",
    "VaultState",
]

#: Seconds in the year the stability fee compounds over (Maker: 365 days).
SECONDS_PER_YEAR = 365 * 86_400

#: Columns and dtypes of the liquidations event table, shared with the lending pools (which
#: add columns of their own) so that the tables concatenate.
#: The first twelve columns of the shared liquidations schema (a take's own fields).
_TAKE_COLUMNS = dict(list(LIQUIDATION_COLUMNS.items())[:12])
AUCTION_COLUMNS = {
    "auction_id": "int64",
    "protocol": "object",
    "step": "int64",
    "account": "int64",
    "kicker": "Int64",
    "collateral": "int64",
    "debt": "int64",
    "tab": "int64",
    "status": "object",
    "end_step": "Int64",
    "raised": "int64",
    "shortfall": "int64",
    "resets": "int64",
    "lot_remaining": "int64",
    "debt_remaining": "int64",
    "tab_remaining": "int64",
    "top_price": "float64",
    "price": "float64",
}
_BAD_DEBT_COLUMNS = {
    **BAD_DEBT_COLUMNS,
    "auction_id": "int64",
    "cause": "object",
}
_NAN = float("nan")


def _frame(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    """Event rows as a frame with fixed dtypes (also when there are no rows)."""
    return pd.DataFrame.from_records(rows, columns=list(columns)).astype(columns)


class PriceFeed(Protocol):
    """Where a protocol reads prices (the model's oracles)."""

    def price(self, ref: str | float) -> float | None:
        """Price of an oracle name, a float constant as-is, or ``None`` before a first price."""
        ...


class AuctionStatus(enum.StrEnum):
    """Life cycle of a collateral auction."""

    ACTIVE = "active"
    #: The tab was fully raised; the remaining collateral went back to the owner.
    RAISED = "raised"
    #: The collateral was sold out before the tab was raised.
    EXHAUSTED = "exhausted"
    #: No bidder after ``max_resets`` resets; collateral kept by the protocol.
    EXPIRED = "expired"


@dataclasses.dataclass(frozen=True)
class VaultResult:
    """Outcome of a vault action; a refused action changed nothing.

    Attributes:
        ok: Whether the action was carried out.
        reason: Why it was refused (empty when ``ok``).
        holder: The vault owner.
        amount_units: Units moved (collateral for deposits and withdrawals, stablecoin for
            draws and repayments); 0 when refused.
        collateral_units: The vault's collateral after the action.
        debt_units: The vault's booked debt after the action.
    """

    ok: bool
    reason: str
    holder: int
    amount_units: int
    collateral_units: int
    debt_units: int


@dataclasses.dataclass(frozen=True)
class VaultState:
    """A vault as it stands: collateral, booked debt and collateralisation (NaN: no price)."""

    holder: int
    collateral_units: int
    debt_units: int
    collateralisation: float


@dataclasses.dataclass(frozen=True)
class AuctionStart:
    """Outcome of :meth:`CdpProtocol.bark`.

    Attributes:
        ok: Whether an auction started.
        reason: Why not (empty when ``ok``).
        auction_id: Id of the new auction (-1 when refused).
        holder: The vault owner.
        collateral_units: Collateral put up for auction.
        debt_units: Vault debt moved to the auction.
        tab_units: Amount to raise: debt plus penalty.
        top_price: Start price, stablecoin per whole collateral token.
    """

    ok: bool
    reason: str
    auction_id: int
    holder: int
    collateral_units: int
    debt_units: int
    tab_units: int
    top_price: float


@dataclasses.dataclass(frozen=True)
class TakeResult:
    """Outcome of :meth:`CdpProtocol.take`; a refused take changed nothing.

    Attributes:
        ok: Whether the keeper bought.
        reason: Why not (empty when ``ok``).
        auction_id: The auction.
        keeper: The buyer.
        price: Auction price of the take (NaN when refused before a price was known).
        collateral_units: Collateral the keeper received.
        paid_units: Stablecoin the keeper paid.
        debt_repaid_units: Part of the payment that covered debt (burned).
        penalty_units: Part of the payment that went to the surplus.
        returned_units: Collateral returned to the owner because the tab was raised.
        shortfall_units: Debt left unraised when the collateral ran out (bad debt).
        status: The auction's status after the take.
    """

    ok: bool
    reason: str
    auction_id: int
    keeper: int
    price: float = _NAN
    collateral_units: int = 0
    paid_units: int = 0
    debt_repaid_units: int = 0
    penalty_units: int = 0
    returned_units: int = 0
    shortfall_units: int = 0
    status: AuctionStatus | None = None


@dataclasses.dataclass(frozen=True)
class TickResult:
    """Auctions :meth:`CdpProtocol.tick` restarted and expired, by id."""

    reset: tuple[int, ...]
    expired: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class AuctionState:
    """Read-only view of an auction for keepers.

    Attributes:
        auction_id: Id to pass to :meth:`CdpProtocol.take`.
        holder: Vault owner.
        lot_units: Collateral left for sale.
        tab_units: Stablecoin still to raise (debt and penalty).
        debt_units: Debt still to raise (the tab without the penalty).
        top_price: Price at the last (re)start.
        price: Price at the protocol's current step.
        restart_step: Step of the last (re)start.
        resets: Resets so far.
        needs_reset: Whether the auction must be reset before it can be taken.
        status: Life-cycle status.
        shortfall_units: Debt left unraised when it ended (bad debt), 0 otherwise.
    """

    auction_id: int
    holder: int
    lot_units: int
    tab_units: int
    debt_units: int
    top_price: float
    price: float
    restart_step: int
    resets: int
    needs_reset: bool
    status: AuctionStatus
    shortfall_units: int


class UnsafeVaults(NamedTuple):
    """Unsafe vaults, one entry per vault, as parallel arrays."""

    holder: np.ndarray
    collateralisation: np.ndarray
    debt: np.ndarray
    collateral: np.ndarray


@dataclasses.dataclass(slots=True)
class _Auction:
    auction_id: int
    holder: int
    kicker: int | None
    start_step: int
    collateral: int
    debt_initial: int
    tab_initial: int
    top: float
    tic: int
    lot: int
    tab: int
    debt: int
    raised: int = 0
    shortfall: int = 0
    resets: int = 0
    status: AuctionStatus = AuctionStatus.ACTIVE
    end_step: int | None = None


@dataclasses.dataclass(frozen=True)
class CdpSnapshot:
    """The protocol's own state captured by :meth:`CdpProtocol.snapshot`."""

    n_vaults: int
    owner: np.ndarray
    ink: np.ndarray
    debt: np.ndarray
    art: np.ndarray
    vault_of: dict[int, int]
    rate: float
    rho: int
    step: int
    auctions: tuple[_Auction, ...]
    active: tuple[int, ...]
    totals: dict[str, int]
    n_liquidations: int
    n_bad_debt: int


class CdpProtocol:
    """A CDP stablecoin with Maker semantics; the rules are in the module docstring.

    Args:
        ledger: The ledger holding every balance.
        name: Protocol name; prefixes its ledger holders.
        config: Validated CDP parameters.
        prices: Where the collateral price is read.

    Attributes:
        step: The current step, set by the model every step (and by :meth:`tick`); event
            rows, auction starts and auction prices use it.
        rate: Maker's ``rate``: debt accumulated per unit of normalised debt, 1.0 at start.

    Raises:
        ValueError: Every method raises it for a holder id the ledger does not know or that
            is one of the protocol's own accounts (a programming error, unlike a refusal,
            which is a result).
        LedgerError: If an asset is unknown or the holder names are taken.

    Examples:
        >>> from marginsim.ledger import AssetSpec
        >>> ledger = Ledger([AssetSpec("WETH", 9), AssetSpec("DAI", 6)])
        >>> cfg = CdpConfig(kind="cdp", collateral="WETH", stablecoin="DAI", price=2000.0)
        >>> class Feed:
        ...     def price(self, ref):
        ...         return ref
        >>> cdp = CdpProtocol(ledger, "maker", cfg, Feed())
        >>> alice = ledger.add_holder("alice")
        >>> ledger.mint(alice, 0, 10 * 10**9, reason="endowment")
        >>> cdp.open_or_deposit(alice, 10 * 10**9).ok
        True
        >>> cdp.draw(alice, 10_000 * 10**6).debt_units
        10000000000
    """

    def __init__(
        self,
        ledger: Ledger,
        name: str,
        config: CdpConfig,
        prices: PriceFeed,
    ) -> None:
        self.ledger = ledger
        self.name = name
        self.config = config
        self.prices = prices
        #: Resets an auction may have (``config.auction.max_resets``); it expires when it
        #: needs one more.
        self.max_resets = config.auction.max_resets
        self.collateral_asset = ledger.asset_id(config.collateral)
        self.stable_asset = ledger.asset_id(config.stablecoin)
        self._dc = ledger.assets[self.collateral_asset].decimals
        self._ds = ledger.assets[self.stable_asset].decimals
        # Value in stablecoin units = collateral units * price * mul / div; multiplying and
        # dividing by exact powers of ten keeps round prices exact (10**-3 is not a float).
        self._mul = float(10 ** max(self._ds - self._dc, 0))
        self._div = float(10 ** max(self._dc - self._ds, 0))
        # Decimal parameters as exact fractions, so that ceil/floor of amounts is exact.
        self._penalty = Fraction(str(config.auction.penalty))
        ceiling = Fraction(str(config.debt_ceiling)) * 10**self._ds
        self._ceiling_units = math.floor(ceiling)
        self._has_ceiling = config.debt_ceiling > 0
        self.vaults_holder = ledger.add_holder(f"{name}:vaults")
        self.auctions_holder = ledger.add_holder(f"{name}:auctions")
        self.surplus_holder = ledger.add_holder(f"{name}:surplus")

        self.step = 0
        self.rate = 1.0
        self._rho = -1  # step of the last accrual: the protocol exists before step 0
        self._n = 0
        capacity = 16
        self._owner = np.zeros(capacity, dtype=np.int64)
        self._ink = np.zeros(capacity, dtype=np.int64)
        self._debt = np.zeros(capacity, dtype=np.int64)
        self._art = np.zeros(capacity, dtype=np.float64)
        self._vault_of: dict[int, int] = {}
        self._auctions: list[_Auction] = []
        self._active: list[int] = []
        self._totals = dict.fromkeys(
            (
                "drawn",
                "repaid",
                "fees",
                "debt",
                "auction_debt",
                "raised_debt",
                "penalties",
                "bad_debt",
                "bad_debt_covered",
                "system_debt",
            ),
            0,
        )
        self._liquidation_rows: list[tuple] = []
        self._bad_debt_rows: list[tuple] = []

    # ================================================================ prices and values
    def oracle_price(self) -> float | None:
        """The collateral price now, stablecoin per whole token; ``None``: no usable price."""
        ref = self.config.price
        price = float(ref) if isinstance(ref, int | float) else self.prices.price(ref)
        if price is None or not math.isfinite(price) or price <= 0:
            return None
        return float(price)

    def _value(self, collateral_units: int | np.ndarray, price: float) -> float | np.ndarray:
        """Value of collateral in stablecoin units (float)."""
        return collateral_units * price * self._mul / self._div

    def _is_safe(self, collateral_units: int, debt_units: int, price: float) -> bool:
        return debt_units == 0 or (
            self._value(collateral_units, price) >= self.config.liquidation_ratio * debt_units
        )

    # ================================================================ vaults
    def _grow(self) -> None:
        capacity = 2 * self._owner.shape[0]
        for attr in ("_owner", "_ink", "_debt", "_art"):
            old = getattr(self, attr)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, attr, new)

    def _ensure_vault(self, holder: int) -> int:
        i = self._vault_of.get(holder)
        if i is None:
            if self._n == self._owner.shape[0]:
                self._grow()
            i = self._n
            self._owner[i] = holder
            self._vault_of[holder] = i
            self._n += 1
        return i

    def _result(self, holder: int, reason: str = "", amount: int = 0) -> VaultResult:
        i = self._vault_of.get(holder)
        ink = 0 if i is None else int(self._ink[i])
        debt = 0 if i is None else int(self._debt[i])
        return VaultResult(not reason, reason, holder, 0 if reason else amount, ink, debt)

    def _check_holder(self, holder: int) -> None:
        if not 0 <= holder < self.ledger.n_holders:
            raise ValueError(f"unknown holder id {holder}; {self.ledger.n_holders} holders exist")
        if holder in (self.vaults_holder, self.auctions_holder, self.surplus_holder):
            raise ValueError(
                f"holder {self.ledger.holder_name(holder)!r} is an account of the protocol "
                "itself, not a user"
            )

    def vault(self, holder: int) -> VaultState:
        """The vault of ``holder`` (zeros when it has none)."""
        i = self._vault_of.get(holder)
        if i is None:
            return VaultState(holder, 0, 0, math.inf)
        ink, debt = int(self._ink[i]), int(self._debt[i])
        price = self.oracle_price()
        if debt == 0:
            ratio = math.inf
        elif price is None:
            ratio = _NAN
        else:
            ratio = float(self._value(ink, price)) / debt
        return VaultState(holder, ink, debt, ratio)

    def open_or_deposit(self, holder: int, collateral_units: int) -> VaultResult:
        """Lock collateral from ``holder``'s wallet in its vault, opening the vault if needed.

        Refused (nothing changes) for a non-positive amount or an insufficient wallet.
        """
        self._check_holder(holder)
        amount = int(collateral_units)
        if amount <= 0:
            return self._result(holder, f"collateral amount must be positive, got {amount}")
        have = self.ledger.balance(holder, self.collateral_asset)
        if have < amount:
            return self._result(
                holder, f"wallet holds {have} collateral units, deposit needs {amount}"
            )
        i = self._ensure_vault(holder)
        self.ledger.transfer(holder, self.vaults_holder, self.collateral_asset, amount)
        self._ink[i] += amount
        return self._result(holder, amount=amount)

    def withdraw(self, holder: int, collateral_units: int) -> VaultResult:
        """Unlock collateral to ``holder``'s wallet.

        Refused when the vault holds less, or when the vault has debt and either no price is
        available or the remaining collateral value would fall below liquidation_ratio * debt.
        """
        self._check_holder(holder)
        amount = int(collateral_units)
        i = self._vault_of.get(holder)
        if amount <= 0:
            return self._result(holder, f"collateral amount must be positive, got {amount}")
        if i is None:
            return self._result(holder, "no vault")
        ink, debt = int(self._ink[i]), int(self._debt[i])
        if amount > ink:
            return self._result(holder, f"vault holds {ink} collateral units, asked {amount}")
        if debt > 0:
            price = self.oracle_price()
            if price is None:
                return self._result(holder, "no price: a vault with debt cannot withdraw")
            if not self._is_safe(ink - amount, debt, price):
                return self._result(
                    holder,
                    f"withdrawal would leave the vault below the liquidation ratio "
                    f"{self.config.liquidation_ratio} (debt {debt} units)",
                )
        self.ledger.transfer(self.vaults_holder, holder, self.collateral_asset, amount)
        self._ink[i] -= amount
        return self._result(holder, amount=amount)

    def draw(self, holder: int, stable_units: int) -> VaultResult:
        """Mint ``stable_units`` of the stablecoin to ``holder`` as new vault debt.

        Refused without a vault or a price, when the vault would fall below the liquidation
        ratio, or when the total vault debt would exceed the debt ceiling.
        """
        self._check_holder(holder)
        amount = int(stable_units)
        i = self._vault_of.get(holder)
        if amount <= 0:
            return self._result(holder, f"draw amount must be positive, got {amount}")
        if i is None:
            return self._result(holder, "no vault")
        price = self.oracle_price()
        if price is None:
            return self._result(holder, "no price: cannot draw")
        ink, new_debt = int(self._ink[i]), int(self._debt[i]) + amount
        if self._has_ceiling and self._totals["debt"] + amount > self._ceiling_units:
            return self._result(
                holder,
                f"debt ceiling {self._ceiling_units} units: total debt "
                f"{self._totals['debt']} + {amount} would exceed it",
            )
        if not self._is_safe(ink, new_debt, price):
            return self._result(
                holder,
                f"draw would put the vault below the liquidation ratio "
                f"{self.config.liquidation_ratio}: collateral value "
                f"{float(self._value(ink, price)):.0f} units, debt {new_debt} units",
            )
        self.ledger.mint(holder, self.stable_asset, amount, reason="vault draw")
        self._set_debt(i, new_debt)
        self._totals["drawn"] += amount
        return self._result(holder, amount=amount)

    def repay(self, holder: int, stable_units: int) -> VaultResult:
        """Burn ``stable_units`` from ``holder``'s wallet against its vault debt.

        Refused when it exceeds the debt owed (use :meth:`repay_all`) or the wallet.
        """
        self._check_holder(holder)
        amount = int(stable_units)
        i = self._vault_of.get(holder)
        if amount <= 0:
            return self._result(holder, f"repay amount must be positive, got {amount}")
        if i is None:
            return self._result(holder, "no vault")
        debt = int(self._debt[i])
        if amount > debt:
            return self._result(holder, f"repay {amount} units exceeds the debt owed, {debt} units")
        have = self.ledger.balance(holder, self.stable_asset)
        if have < amount:
            return self._result(holder, f"wallet holds {have} stablecoin units, repay {amount}")
        self.ledger.burn(holder, self.stable_asset, amount, reason="vault repayment")
        self._set_debt(i, debt - amount)
        self._totals["repaid"] += amount
        return self._result(holder, amount=amount)

    def repay_all(self, holder: int) -> VaultResult:
        """Repay the whole booked debt of ``holder``'s vault (refused if nothing is owed)."""
        i = self._vault_of.get(holder)
        debt = 0 if i is None else int(self._debt[i])
        if debt == 0:
            self._check_holder(holder)
            return self._result(holder, "nothing owed")
        return self.repay(holder, debt)

    def _set_debt(self, i: int, debt: int) -> None:
        # Resetting art to booked / rate crystallises the (< 1 unit) rounding of the fee in
        # the protocol's favour at the holder's own action; it never accumulates.
        self._totals["debt"] += debt - int(self._debt[i])
        self._debt[i] = debt
        self._art[i] = debt / self.rate if debt else 0.0

    def open_position(self, holder: int, collateral_units: int, debt_units: int) -> VaultResult:
        """Lock collateral and draw debt in one go, for explicit accounts at initialisation.

        The model mints the collateral into ``holder``'s wallet first.

        Raises:
            ValueError: If the position would be unsafe, there is no price, the wallet lacks
                the collateral or the debt ceiling would be exceeded; nothing changes.
        """
        self._check_holder(holder)
        coll, debt = int(collateral_units), int(debt_units)
        if coll < 0 or debt < 0:
            raise ValueError(
                f"open_position of {self.name!r} needs non-negative amounts, got "
                f"collateral {coll}, debt {debt}"
            )
        if debt > 0:
            price = self.oracle_price()
            if price is None:
                raise ValueError(
                    f"cannot open a position with debt in {self.name!r}: no price for "
                    f"{self.config.price!r}"
                )
            vault = self.vault(holder)
            ink, new_debt = vault.collateral_units + coll, vault.debt_units + debt
            if not self._is_safe(ink, new_debt, price):
                ratio = float(self._value(ink, price)) / new_debt
                raise ValueError(
                    f"position in {self.name!r} would be unsafe: collateralisation "
                    f"{ratio:.4f} < liquidation_ratio {self.config.liquidation_ratio} "
                    f"(collateral {ink} units at price {price}, debt {new_debt} units)"
                )
        snap, ledger_snap = self.snapshot(), self.ledger.snapshot()
        steps = []
        if coll:
            steps.append(lambda: self.open_or_deposit(holder, coll))
        if debt:
            steps.append(lambda: self.draw(holder, debt))
        for action in steps:
            result = action()
            if not result.ok:  # undo the deposit if the draw is refused
                self.restore(snap)
                self.ledger.restore(ledger_snap)
                raise ValueError(f"cannot open position in {self.name!r}: {result.reason}")
        return self._result(holder, amount=debt)

    # ================================================================ stability fee
    def accrue(self, step: int, step_seconds: float) -> int:
        """Compound the stability fee over the steps since the last accrual.

        Args:
            step: The current step; ``step - last accrued step`` steps are compounded
                (none if this step was already accrued).
            step_seconds: Length of one step.

        Returns:
            The fee minted to the surplus, in stablecoin units.
        """
        steps = step - self._rho
        if steps <= 0:
            return 0
        self._rho = step
        growth = (1.0 + self.config.stability_fee) ** (step_seconds / SECONDS_PER_YEAR)
        for _ in range(steps):  # step by step, so skipped steps compound exactly as each step
            self.rate *= growth
        n = self._n
        debt = self._debt[:n]
        grown = np.maximum(debt, np.ceil(self._art[:n] * self.rate).astype(np.int64))
        fee = int((grown - debt).sum())
        if fee:
            self._debt[:n] = grown
            self._totals["debt"] += fee
            self._totals["fees"] += fee
            self.ledger.mint(self.surplus_holder, self.stable_asset, fee, reason="stability fee")
            self._heal()
        return fee

    # ================================================================ safety
    def unsafe_vaults(self) -> UnsafeVaults:
        """Vaults below the liquidation ratio at the current price (none without a price)."""
        price = self.oracle_price()
        n = self._n
        if price is None or n == 0:
            empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            return UnsafeVaults(empty_i, empty_f, empty_i.copy(), empty_i.copy())
        ink, debt = self._ink[:n], self._debt[:n]
        value = self._value(ink.astype(np.float64), price)
        unsafe = (debt > 0) & (value < self.config.liquidation_ratio * debt.astype(np.float64))
        idx = np.flatnonzero(unsafe)
        return UnsafeVaults(
            self._owner[idx].copy(), value[idx] / debt[idx], debt[idx].copy(), ink[idx].copy()
        )

    def liquidation_prices(self) -> LiquidationPrices:
        """Collateral price at which each vault with debt becomes unsafe (vectorised).

        A vault is unsafe below ``p = liquidation_ratio * debt / collateral`` (per whole
        token, stablecoin per collateral); every vault is a long (side +1). The debt value is
        its booked debt in human stablecoin units, the stablecoin counted at 1; the
        collateral value is its locked collateral at that price (``0`` for a vault with
        debt and no collateral, which is listed at ``inf``).
        """
        price = self.oracle_price()
        current = _NAN if price is None else price
        n = self._n
        ink, debt = self._ink[:n], self._debt[:n]
        keep = debt > 0
        if not keep.any():
            return LiquidationPrices.empty(current)
        ink_k = ink[keep].astype(np.float64)
        debt_k = debt[keep].astype(np.float64)
        with np.errstate(divide="ignore"):
            liq = self.config.liquidation_ratio * debt_k * self._div / (ink_k * self._mul)
        stable_unit = 10.0**self._ds
        coll_at = np.where(ink_k > 0, ink_k * np.where(ink_k > 0, liq, 0.0), 0.0)
        return LiquidationPrices(
            holder=self._owner[:n][keep].copy(),
            price=liq,
            debt_value=debt_k / stable_unit,
            side=np.ones(liq.shape[0], dtype=np.int64),
            current_price=current,
            collateral_value=coll_at * self._mul / self._div / stable_unit,
        )

    @property
    def locked_collateral(self) -> float:
        """Collateral locked in vaults now, whole tokens."""
        return int(self._ink[: self._n].sum()) / 10.0**self._dc

    @property
    def liquidation_count(self) -> int:
        """Rows of :meth:`liquidations` so far (auction takes)."""
        return len(self._liquidation_rows)

    def account_exposures(self) -> AccountExposures:
        """Every vault with debt, valued at the oracle price (vectorised).

        Per vault: ``notional`` = locked collateral at the oracle price, ``debt`` = booked
        debt (stablecoin at 1), ``equity`` = notional - debt, ``maintenance`` =
        ``notional * (1 - 1 / liquidation_ratio)`` (the vault is unsafe exactly when its
        equity is below it). Empty without an oracle price.
        """
        price = self.oracle_price()
        n = self._n
        keep = self._debt[:n] > 0
        if price is None or not keep.any():
            return AccountExposures.empty()
        stable_unit = 10.0**self._ds
        notional = self._value(self._ink[:n][keep].astype(np.float64), price) / stable_unit
        debt = self._debt[:n][keep].astype(np.float64) / stable_unit
        return AccountExposures(
            holder=self._owner[:n][keep].copy(),
            notional=notional,
            equity=notional - debt,
            debt=debt,
            maintenance=notional * (1.0 - 1.0 / self.config.liquidation_ratio),
        )

    # ================================================================ auctions
    def _price_at(self, a: _Auction, step: int) -> float:
        raw = a.top * self.config.auction.step_decay ** max(step - a.tic, 0)
        # Quoted to 12 significant digits so the float noise of the power (1750 * 0.8**2 =
        # 1120.0000000000002) never leaks into the integer amounts of a take.
        return float(f"{raw:.12g}")

    def _needs_reset(self, a: _Auction, step: int) -> bool:
        cfg = self.config.auction
        return (
            step - a.tic > cfg.reset_after_steps
            or self._price_at(a, step) < cfg.reset_below * a.top
        )

    def bark(self, holder: int, keeper_holder: int | None = None) -> AuctionStart:
        """Start a Dutch auction of ``holder``'s unsafe vault at the current step.

        Args:
            holder: Vault owner.
            keeper_holder: Who triggered it (recorded as the auction's kicker; Maker's keeper
                rewards are not modelled).

        Returns:
            The auction started, or a refusal (vault safe, without debt, or no price).
        """
        self._check_holder(holder)

        def refuse(reason: str) -> AuctionStart:
            return AuctionStart(False, reason, -1, holder, 0, 0, 0, _NAN)

        i = self._vault_of.get(holder)
        if i is None or self._debt[i] == 0:
            return refuse("no vault debt to liquidate")
        price = self.oracle_price()
        if price is None:
            return refuse("no price: no liquidation starts")
        lot, debt = int(self._ink[i]), int(self._debt[i])
        if self._is_safe(lot, debt, price):
            return refuse(
                f"vault is safe: collateralisation {float(self._value(lot, price)) / debt:.4f} "
                f">= {self.config.liquidation_ratio}"
            )
        tab = debt + math.ceil(debt * self._penalty)
        if lot:
            self.ledger.transfer(
                self.vaults_holder, self.auctions_holder, self.collateral_asset, lot
            )
        self._ink[i] = 0
        self._set_debt(i, 0)
        self._totals["auction_debt"] += debt
        top = price * self.config.auction.start_multiplier
        a = _Auction(
            auction_id=len(self._auctions),
            holder=holder,
            kicker=keeper_holder,
            start_step=self.step,
            collateral=lot,
            debt_initial=debt,
            tab_initial=tab,
            top=top,
            tic=self.step,
            lot=lot,
            tab=tab,
            debt=debt,
        )
        self._auctions.append(a)
        self._active.append(a.auction_id)
        if lot == 0:  # nothing to sell: the debt is unraisable at once
            self._end(a, AuctionStatus.EXHAUSTED)
            self._record_bad_debt(a, "no collateral")
        return AuctionStart(True, "", a.auction_id, holder, lot, debt, tab, top)

    def tick(self, step: int) -> TickResult:
        """Advance every auction to ``step``: restart or expire those that need a reset.

        Prices are a function of the step (``top * step_decay ** (step - restart step)``), so
        advancing is setting :attr:`step`; an auction that needs a reset restarts from
        ``oracle price * start_multiplier`` (if there is a price), or expires after
        ``max_resets`` resets.
        """
        self.step = step
        reset: list[int] = []
        expired: list[int] = []
        price: float | None = None
        for auction_id in list(self._active):
            a = self._auctions[auction_id]
            if not self._needs_reset(a, step):
                continue
            if a.resets >= self.max_resets:
                if a.lot:
                    self.ledger.transfer(
                        self.auctions_holder, self.surplus_holder, self.collateral_asset, a.lot
                    )
                    a.lot = 0
                self._end(a, AuctionStatus.EXPIRED)
                self._record_bad_debt(a, "auction expired")
                expired.append(auction_id)
                continue
            price = self.oracle_price() if price is None else price
            if price is None:
                continue  # a reset waits for a price; the auction cannot be taken meanwhile
            a.top = price * self.config.auction.start_multiplier
            a.tic = step
            a.resets += 1
            reset.append(auction_id)
        return TickResult(tuple(reset), tuple(expired))

    def take(
        self, auction_id: int, keeper: int, max_collateral_units: int, max_price: float
    ) -> TakeResult:
        """Buy collateral from an auction at its current price (``Clipper.take``).

        Args:
            auction_id: The auction.
            keeper: The buyer; pays in the stablecoin from its wallet.
            max_collateral_units: Most collateral to buy.
            max_price: Highest acceptable price, stablecoin per whole collateral token.

        Returns:
            What was bought and paid, or a refusal (inactive auction, needs a reset, price
            above ``max_price``, keeper short of stablecoin); a refusal changes nothing.
        """
        self._check_holder(keeper)
        if not 0 <= auction_id < len(self._auctions):
            return TakeResult(False, f"unknown auction {auction_id}", auction_id, keeper)
        a = self._auctions[auction_id]
        if a.status is not AuctionStatus.ACTIVE:
            return TakeResult(False, f"auction is {a.status.value}", auction_id, keeper)
        wanted = int(max_collateral_units)
        if wanted <= 0:
            return TakeResult(
                False, f"collateral amount must be positive, got {wanted}", auction_id, keeper
            )
        if self._needs_reset(a, self.step):
            return TakeResult(False, "auction needs a reset (tick)", auction_id, keeper)
        price = self._price_at(a, self.step)
        if not price <= max_price:  # also refuses a NaN limit
            return TakeResult(
                False, f"price {price} above max_price {max_price}", auction_id, keeper, price
            )
        size = min(a.lot, wanted)
        # Exact rational arithmetic on the quoted decimal price: stablecoin units per unit.
        unit_price = Fraction(repr(price)) * 10**self._ds / 10**self._dc
        cost = size * unit_price
        if cost >= a.tab:
            # The slice would raise more than the tab: pay the tab, get what it buys at this
            # price rounded down (at least one unit so a tiny tab can always be closed).
            owe = a.tab
            size = min(size, max(1, math.floor(a.tab / unit_price)))
        else:
            owe = math.ceil(cost)
        have = self.ledger.balance(keeper, self.stable_asset)
        if have < owe:
            return TakeResult(
                False,
                f"keeper holds {have} stablecoin units, the take costs {owe}",
                auction_id,
                keeper,
                price,
            )
        debt_part = min(owe, a.debt)
        penalty_part = owe - debt_part
        self.ledger.burn(keeper, self.stable_asset, debt_part, reason="auction proceeds")
        if penalty_part:
            self.ledger.transfer(keeper, self.surplus_holder, self.stable_asset, penalty_part)
        self.ledger.transfer(self.auctions_holder, keeper, self.collateral_asset, size)
        a.lot -= size
        a.tab -= owe
        a.debt -= debt_part
        a.raised += owe
        self._totals["auction_debt"] -= debt_part
        self._totals["raised_debt"] += debt_part
        self._totals["penalties"] += penalty_part
        returned = shortfall = 0
        if a.tab == 0:
            returned = a.lot
            if returned:
                self.ledger.transfer(
                    self.auctions_holder, a.holder, self.collateral_asset, returned
                )
            a.lot = 0
            self._end(a, AuctionStatus.RAISED)
        elif a.lot == 0:
            shortfall = a.debt
            self._end(a, AuctionStatus.EXHAUSTED)
            self._record_bad_debt(a, "collateral exhausted")
        self._heal()
        oracle = self.oracle_price()
        self._liquidation_rows.append(
            (
                self.step,
                self.name,
                a.holder,
                keeper,
                self.config.stablecoin,
                debt_part,
                self.config.collateral,
                size,
                _NAN if oracle is None else oracle,
                penalty_part / 10**self._ds,
                penalty_part,
                shortfall,
            )
        )
        return TakeResult(
            True,
            "",
            auction_id,
            keeper,
            price,
            size,
            owe,
            debt_part,
            penalty_part,
            returned,
            shortfall,
            a.status,
        )

    def _end(self, a: _Auction, status: AuctionStatus) -> None:
        a.status = status
        a.end_step = self.step
        self._active.remove(a.auction_id)

    def _record_bad_debt(self, a: _Auction, cause: str) -> None:
        """Turn an ended auction's unraised debt into bad debt, covered first by surplus."""
        amount = a.debt
        a.shortfall = amount
        a.debt = 0
        if amount == 0:
            return
        self._totals["auction_debt"] -= amount
        self._totals["bad_debt"] += amount
        self._totals["system_debt"] += amount
        covered = min(amount, self._heal())
        self._bad_debt_rows.append(
            (
                self.step,
                self.name,
                a.holder,
                self.config.stablecoin,
                amount,
                covered,
                amount - covered,
                a.auction_id,
                cause,
            )
        )

    def _heal(self) -> int:
        """Cancel system debt against surplus stablecoin (Maker's ``Vow.heal``).

        Returns:
            The stablecoin units burned from the surplus.
        """
        owed = self._totals["system_debt"]
        covered = min(owed, self.ledger.balance(self.surplus_holder, self.stable_asset))
        if covered:
            self.ledger.burn(
                self.surplus_holder,
                self.stable_asset,
                covered,
                reason="bad debt covered by surplus",
            )
            self._totals["system_debt"] -= covered
            self._totals["bad_debt_covered"] += covered
        return covered

    def auction(self, auction_id: int) -> AuctionState:
        """One auction as it stands at :attr:`step`.

        Raises:
            KeyError: If there is no such auction.
        """
        if not 0 <= auction_id < len(self._auctions):
            raise KeyError(f"unknown auction {auction_id}; {len(self._auctions)} exist")
        a = self._auctions[auction_id]
        active = a.status is AuctionStatus.ACTIVE
        return AuctionState(
            a.auction_id,
            a.holder,
            a.lot,
            a.tab,
            a.debt,
            a.top,
            self._price_at(a, self.step) if active else _NAN,
            a.tic,
            a.resets,
            active and self._needs_reset(a, self.step),
            a.status,
            a.shortfall,
        )

    def active_auctions(self) -> list[AuctionState]:
        """Every running auction, oldest first."""
        return [self.auction(i) for i in self._active]

    # ================================================================ events and metrics
    def liquidations(self) -> pd.DataFrame:
        """One row per take; the columns of the lending pools' liquidations table.

        ``account`` (vault owner) and ``liquidator`` (keeper) are holder ids;
        ``debt_repaid`` (the debt part, burned), ``protocol_fee`` (the penalty part, paid to
        the surplus) and ``bad_debt`` (the shortfall this take left) are stablecoin units;
        ``bonus_value`` is the penalty part again as a value in the stablecoin, human units
        (the liquidation penalty is the CDP's bonus and goes wholly to the protocol);
        ``collateral_seized`` is collateral units; ``oracle_price`` is the collateral price
        at the take (NaN without one).
        """
        frame = _frame(self._liquidation_rows, _TAKE_COLUMNS)
        # A keeper receives exactly the collateral it bought, as the underlying.
        frame["liquidator_received"] = frame["collateral_seized"]
        frame["received_receipt"] = False
        return frame

    def auctions(self) -> pd.DataFrame:
        """One row per auction, active or ended.

        Columns: ``auction_id``, ``protocol``, start ``step``, owner ``account`` and
        ``kicker`` (holder ids; NA without a kicker), initial ``collateral`` (units), ``debt``
        and ``tab`` (stablecoin units), ``status``, ``end_step`` (NA while active),
        ``raised``, ``shortfall``, ``resets``, ``lot_remaining``, ``debt_remaining``,
        ``tab_remaining``, ``top_price`` and the current ``price`` (NaN once ended).
        """
        rows = [
            (
                a.auction_id,
                self.name,
                a.start_step,
                a.holder,
                a.kicker,
                a.collateral,
                a.debt_initial,
                a.tab_initial,
                a.status.value,
                a.end_step,
                a.raised,
                a.shortfall,
                a.resets,
                a.lot,
                a.debt,
                a.tab,
                a.top,
                self._price_at(a, self.step) if a.status is AuctionStatus.ACTIVE else _NAN,
            )
            for a in self._auctions
        ]
        return _frame(rows, AUCTION_COLUMNS)

    def bad_debt(self) -> pd.DataFrame:
        """One row per shortfall (bad debt recorded).

        Columns: ``step``, ``protocol``, ``account`` (holder id), ``asset`` (the stablecoin),
        ``amount``
        (units), the part ``covered`` at once by the surplus, the ``uncovered`` part that
        became system debt, ``auction_id`` and ``cause`` ("collateral exhausted", "auction
        expired", "no collateral").
        """
        return _frame(self._bad_debt_rows, _BAD_DEBT_COLUMNS)

    def vaults(self) -> pd.DataFrame:
        """Every vault that was ever opened.

        Columns: ``holder`` id, ``account`` name, ``collateral`` and ``debt`` units,
        ``collateralisation`` (inf without debt, NaN without a price).
        """
        n = self._n
        ink, debt = self._ink[:n].copy(), self._debt[:n].copy()
        price = self.oracle_price()
        with np.errstate(divide="ignore", invalid="ignore"):
            if price is None:
                ratio = np.where(debt > 0, _NAN, np.inf)
            else:
                ratio = np.where(
                    debt > 0, self._value(ink.astype(np.float64), price) / debt, np.inf
                )
        return pd.DataFrame(
            {
                "holder": self._owner[:n].copy(),
                "account": [self.ledger.holder_name(int(h)) for h in self._owner[:n]],
                "collateral": ink,
                "debt": debt,
                "collateralisation": ratio,
            }
        )

    def totals(self) -> dict[str, int]:
        """Cumulative accounts in stablecoin units.

        ``drawn``, ``repaid``, ``fees`` (minted to surplus), ``debt`` (vault debt now),
        ``auction_debt`` (debt now pending in auctions), ``raised_debt`` (debt burned from
        auction proceeds), ``penalties`` (paid to surplus), ``bad_debt`` (recorded),
        ``bad_debt_covered`` (by surplus), ``system_debt`` (uncovered now).
        """
        return dict(self._totals)

    def metrics(self) -> dict[str, float]:
        """Per-step measures, human units; the model prefixes the keys with the name.

        Keys: ``debt`` (vault debt), ``collateral`` (locked in vaults), ``collateralisation``
        (aggregate collateral value / vault debt; NaN without debt or price),
        ``unsafe_vaults`` (count), ``active_auctions`` (count), ``auction_debt`` (debt pending
        in auctions), ``surplus`` (stablecoin in the surplus buffer), ``system_debt``
        (uncovered bad debt), ``bad_debt`` (cumulative recorded), ``stablecoin_supply``
        (ledger supply of the stablecoin, all minters), ``rate`` (fee accumulator).
        """
        stable_unit = 10.0**self._ds
        coll_unit = 10.0**self._dc
        n = self._n
        debt = self._totals["debt"]
        ink = int(self._ink[:n].sum())
        price = self.oracle_price()
        ratio = _NAN if price is None or debt == 0 else float(self._value(ink, price)) / debt
        return {
            "debt": debt / stable_unit,
            "collateral": ink / coll_unit,
            "collateralisation": ratio,
            "unsafe_vaults": float(len(self.unsafe_vaults().holder)),
            "active_auctions": float(len(self._active)),
            "auction_debt": self._totals["auction_debt"] / stable_unit,
            "surplus": self.ledger.balance(self.surplus_holder, self.stable_asset) / stable_unit,
            "system_debt": self._totals["system_debt"] / stable_unit,
            "bad_debt": self._totals["bad_debt"] / stable_unit,
            "stablecoin_supply": self.ledger.supply(self.stable_asset) / stable_unit,
            "rate": self.rate,
        }

    # ================================================================ invariants and atomicity
    def check_invariants(self) -> None:
        """Verify the protocol's books against the ledger and the debt identity, exactly.

        Raises:
            AssertionError: Naming the first account that does not add up.
        """
        n, t, led = self._n, self._totals, self.ledger
        checks = (
            ("vault collateral", int(self._ink[:n].sum()),
             led.balance(self.vaults_holder, self.collateral_asset)),
            ("auction collateral", sum(self._auctions[i].lot for i in self._active),
             led.balance(self.auctions_holder, self.collateral_asset)),
            ("vault debt", int(self._debt[:n].sum()), t["debt"]),
            ("auction debt", sum(self._auctions[i].debt for i in self._active),
             t["auction_debt"]),
            ("debt identity", t["drawn"] + t["fees"] - t["repaid"] - t["raised_debt"],
             t["debt"] + t["auction_debt"] + t["bad_debt"]),
            ("bad debt", t["bad_debt"], t["bad_debt_covered"] + t["system_debt"]),
        )  # fmt: skip
        for what, got, expected in checks:
            if got != expected:
                raise AssertionError(f"{self.name}: {what} is {got}, expected {expected}")
        if (self._debt[:n] < 0).any() or (self._ink[:n] < 0).any():
            raise AssertionError(f"{self.name}: a vault has a negative balance")

    def snapshot(self) -> CdpSnapshot:
        """Capture the protocol's own state, for :meth:`restore` (atomic actions)."""
        n = self._n
        return CdpSnapshot(
            n_vaults=n,
            owner=self._owner[:n].copy(),
            ink=self._ink[:n].copy(),
            debt=self._debt[:n].copy(),
            art=self._art[:n].copy(),
            vault_of=dict(self._vault_of),
            rate=self.rate,
            rho=self._rho,
            step=self.step,
            auctions=tuple(dataclasses.replace(a) for a in self._auctions),
            active=tuple(self._active),
            totals=dict(self._totals),
            n_liquidations=len(self._liquidation_rows),
            n_bad_debt=len(self._bad_debt_rows),
        )

    def restore(self, snap: CdpSnapshot) -> None:
        """Return to the state captured by :meth:`snapshot` (the ledger restores separately)."""
        n = snap.n_vaults
        for attr, saved in (
            ("_owner", snap.owner),
            ("_ink", snap.ink),
            ("_debt", snap.debt),
            ("_art", snap.art),
        ):
            array = getattr(self, attr)
            array[:n] = saved
            array[n:] = 0
        self._n = n
        self._vault_of = dict(snap.vault_of)
        self.rate = snap.rate
        self._rho = snap.rho
        self.step = snap.step
        self._auctions = [dataclasses.replace(a) for a in snap.auctions]
        self._active = list(snap.active)
        self._totals = dict(snap.totals)
        del self._liquidation_rows[snap.n_liquidations :]
        del self._bad_debt_rows[snap.n_bad_debt :]
