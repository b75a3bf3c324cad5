"""Event-table schemas that several protocols share, so that their tables concatenate."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["BAD_DEBT_COLUMNS", "LIQUIDATION_COLUMNS", "AccountExposures", "LiquidationPrices"]


@dataclasses.dataclass(frozen=True)
class LiquidationPrices:
    """Per-account liquidation prices of one volatile asset in one protocol (read-only scan).

    Arrays are aligned; only accounts that some positive price of the asset makes
    liquidatable are listed (an account already liquidatable at every price has price
    ``inf`` on the long side or ``0`` on the short side).

    Attributes:
        holder: Holder ids.
        price: Price of the asset (in the protocol's own oracle units) at which the account
            becomes liquidatable.
        debt_value: Debt value of the account at that price, quote human units (stablecoins
            counted at 1 in a CDP; the protocol's unit of account in a lending pool).
        side: +1 when the account is liquidated as the price falls to ``price`` or below
            (long), -1 when it rises to ``price`` or above (short).
        current_price: The protocol's price of the asset now (NaN without one); the map
            scales ``price`` by ``reference / current_price`` so that protocols reading
            different oracles share one axis.
        collateral_value: Collateral of the account at ``price``, quote human units (a
            lending account's whole collateral, a vault's locked collateral, a perp
            position's margin); ``None`` when the protocol does not report it (the map's
            collateral columns are then NaN).
    """

    holder: np.ndarray
    price: np.ndarray
    debt_value: np.ndarray
    side: np.ndarray
    current_price: float
    collateral_value: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.holder.shape[0])

    @classmethod
    def empty(cls, current_price: float = float("nan")) -> LiquidationPrices:
        """No account at risk."""
        z = np.zeros(0, dtype=np.float64)
        return cls(
            np.zeros(0, dtype=np.int64),
            z,
            z.copy(),
            np.zeros(0, dtype=np.int64),
            current_price,
            z.copy(),
        )


@dataclasses.dataclass(frozen=True)
class AccountExposures:
    """Leveraged accounts of one protocol and what the market-wide metrics need of each.

    Arrays are aligned, one entry per leveraged account (a lending account or vault with
    debt, a perp account with an open position); values in quote human units at the
    protocol's current prices (stablecoins counted at 1).

    Attributes:
        holder: Holder ids.
        notional: Gross position value: a lending account's collateral value, a vault's
            collateral value, the sum of a perp account's position notionals at mark.
        equity: Notional minus debt for lending accounts and vaults; a perp account's margin
            balance (wallet + isolated margin + unrealised PnL). May be zero or negative.
        debt: Margin debt: lending debt value, vault debt, a perp account's
            ``max(0, notional - margin balance)`` (per position for isolated accounts).
        maintenance: Maintenance requirement in value, ``sum(notional * mm_rate)``: lending
            ``sum(collateral_value_j * (1 - liquidation_threshold_j))``, a vault
            ``collateral_value * (1 - 1 / liquidation_ratio)``, perp
            ``sum(position_notional * tier_rate)``.
    """

    holder: np.ndarray
    notional: np.ndarray
    equity: np.ndarray
    debt: np.ndarray
    maintenance: np.ndarray

    def __len__(self) -> int:
        return int(self.holder.shape[0])

    @classmethod
    def empty(cls) -> AccountExposures:
        """No leveraged account."""
        z = np.zeros(0, dtype=np.float64)
        return cls(np.zeros(0, dtype=np.int64), z, z.copy(), z.copy(), z.copy())


#: Columns and dtypes of every protocol's ``liquidations`` table (lending liquidations, CDP
#: auction takes, perp liquidation-engine closes); each protocol documents what its rows put
#: in the debt, collateral, bonus and fee columns.
LIQUIDATION_COLUMNS: dict[str, str] = {
    "step": "int64",
    "protocol": "object",
    "account": "int64",
    "liquidator": "int64",
    "debt_asset": "object",
    "debt_repaid": "int64",
    "collateral_asset": "object",
    "collateral_seized": "int64",
    "oracle_price": "float64",
    "bonus_value": "float64",
    "protocol_fee": "int64",
    "bad_debt": "int64",
    "liquidator_received": "int64",
    "received_receipt": "bool",
}


#: Columns of the run's ``bad_debt`` table: amounts in the asset's smallest unit; ``covered``
#: by the protocol's reserves, surplus or insurance fund, ``uncovered`` borne by suppliers,
#: left as system debt or to the fund's later income. Perp venues write rows in this form;
#: lending pools and CDPs name or extend the columns and the model maps them here.
BAD_DEBT_COLUMNS: dict[str, str] = {
    "step": "int64",
    "protocol": "object",
    "account": "int64",
    "asset": "object",
    "amount": "int64",
    "covered": "int64",
    "uncovered": "int64",
}
