"""Event-table schemas that several protocols share, so that their tables concatenate."""

from __future__ import annotations

__all__ = ["LIQUIDATION_COLUMNS"]

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
