"""Event-table schemas that several protocols share, so that their tables concatenate."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["LIQUIDATION_COLUMNS", "LiquidationPrices"]


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
    """

    holder: np.ndarray
    price: np.ndarray
    debt_value: np.ndarray
    side: np.ndarray
    current_price: float

    def __len__(self) -> int:
        return int(self.holder.shape[0])

    @classmethod
    def empty(cls, current_price: float = float("nan")) -> LiquidationPrices:
        """No account at risk."""
        z = np.zeros(0, dtype=np.float64)
        return cls(
            np.zeros(0, dtype=np.int64), z, z.copy(), np.zeros(0, dtype=np.int64), current_price
        )


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
