"""Published parameter sets of real protocols, as plain dicts (no imports from marginsim).

Keys follow :class:`marginsim.config.LendingConfig` and :class:`marginsim.config.ReserveConfig`
(``price`` is left to the scenario). Every number carries its source and date; the values are
snapshots, since governance changes them often.

Mapping notes:

* Aave's rate strategy ``(baseVariableBorrowRate, variableRateSlope1, variableRateSlope2,
  optimalUsageRatio)`` is the GLOSSARY kinked model as is.
* Compound v2's ``JumpRateModelV2(baseRatePerYear, multiplierPerYear, jumpMultiplierPerYear,
  kink)`` divides the multiplier by the kink, so ``slope1 = multiplierPerYear`` (the rate
  added at the kink) and ``slope2 = jumpMultiplierPerYear * (1 - kink)`` (the rate added
  between the kink and full utilisation). A straight-line ``WhitePaperInterestRateModel(base,
  multiplier)`` is the kinked model with ``slope1 = multiplier * optimal`` and ``slope2 =
  multiplier * (1 - optimal)``, for any ``optimal``.
* Compound v2 has one collateral factor: it is both ``ltv`` and ``liquidation_threshold``.
  Its liquidation incentive (1.08) is ``liquidation_bonus = 0.08``; since Proposal 49
  (2021) ``protocolSeizeShareMantissa = 2.8%`` of the seized collateral goes to reserves,
  which is ``0.028 * 1.08 / 0.08 = 0.378`` of the bonus part (``protocol_share``).
* Compound v2 has no flash loans (``flash_loans = false``) and no supply caps.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LENDING_PRESETS"]

LENDING_PRESETS: dict[str, dict[str, Any]] = {
    "aave-v3": {
        # Aave v3 LiquidationLogic: DEFAULT_LIQUIDATION_CLOSE_FACTOR = 0.5e4 (50%),
        # CLOSE_FACTOR_HF_THRESHOLD = 0.95e18 (100% below HF 0.95); aave-v3-core, v3.0-v3.2.
        "close_factor": 0.5,
        "full_close_below_hf": 0.95,
        # Aave v3 FLASHLOAN_PREMIUM_TOTAL = 5 bps (aave.com docs, Flash Loans; Ethereum market).
        "flash_loans": True,
        "flash_loan_fee": 0.0005,
        "reserves": {
            # Aave v3 Ethereum, config snapshot after the payload of 2023-10-31 that upgraded
            # WETH parameters (bgd-labs/aave-proposals-v3, file reports/AaveV3Ethereum_
            # UpgradeAaveV3ETHPooolWETHParameters_20231031_after.json): ltv 8050,
            # liquidationThreshold 8300, liquidationBonus 10500, liquidationProtocolFee 1000,
            # reserveFactor 1500; rate strategy 0xA901...F276: base 0, slope1 2.8%, slope2 80%,
            # optimal usage 80%.
            # (Caps then: supply 1,800,000, borrow 1,400,000 WETH; left at 0 = none here.)
            "WETH": {
                "ltv": 0.805,
                "liquidation_threshold": 0.83,
                "liquidation_bonus": 0.05,
                "protocol_share": 0.10,
                "reserve_factor": 0.15,
                "borrowable": True,
                "rate": {"base": 0.0, "slope1": 0.028, "slope2": 0.80, "optimal": 0.80},
            },
            # Same snapshot (2023-10-31), USDC: ltv 7700, liquidationThreshold 8000,
            # liquidationBonus 10450, liquidationProtocolFee 2000, reserveFactor 1000; rate
            # strategy 0x8F18...Ba6E: base 0, slope1 3.5%, slope2 60%, optimal usage 90%.
            # (Caps then: supply 1,760,000,000, borrow 1,580,000,000 USDC.)
            "USDC": {
                "ltv": 0.77,
                "liquidation_threshold": 0.80,
                "liquidation_bonus": 0.045,
                "protocol_share": 0.20,
                "reserve_factor": 0.10,
                "borrowable": True,
                "rate": {"base": 0.0, "slope1": 0.035, "slope2": 0.60, "optimal": 0.90},
            },
        },
    },
    "compound-v2": {
        # Comptroller closeFactorMantissa = 0.5e18: a fixed 50%, never 100% (no HF threshold).
        "close_factor": 0.5,
        "full_close_below_hf": 0.0,
        # No flash loans in Compound v2.
        "flash_loans": False,
        "flash_loan_fee": 0.0,
        "reserves": {
            # cETH (0x4Ddc...0eD5): collateralFactorMantissa 0.825 (on-chain value recorded by
            # Centic-io/defi-state-querier, compound_eth.py, 2023); liquidationIncentive 1.08
            # with protocolSeizeShare 2.8% (Proposal 49, Gauntlet note of 2021-11-17);
            # reserveFactorMantissa 0.20. Rate: WhitePaperInterestRateModel 0x0C3F...14C0
            # (deployed 2020-01-20, block 9321474): base 2%/yr, multiplier 10%/yr, straight
            # line; it served cETH until the Merge-era change of 2022-09.
            "WETH": {
                "ltv": 0.825,
                "liquidation_threshold": 0.825,
                "liquidation_bonus": 0.08,
                "protocol_share": 0.378,
                "reserve_factor": 0.20,
                "borrowable": True,
                "rate": {"base": 0.02, "slope1": 0.08, "slope2": 0.02, "optimal": 0.80},
            },
            # cUSDC (0x39AA...7563): collateralFactorMantissa 0.855 (same record, 2023);
            # reserveFactorMantissa 0.075 (comp.xyz "Risk Parameter Update - February 2021").
            # Rate: LegacyJumpRateModelV2 0xD8EC...53c0 (Proposal 23, executed 2020-09-21):
            # baseRatePerYear 0, multiplierPerYear 0.04, jumpMultiplierPerYear 1.09, kink 0.8
            # -> slope1 0.04, slope2 1.09 * 0.2 = 0.218.
            "USDC": {
                "ltv": 0.855,
                "liquidation_threshold": 0.855,
                "liquidation_bonus": 0.08,
                "protocol_share": 0.378,
                "reserve_factor": 0.075,
                "borrowable": True,
                "rate": {"base": 0.0, "slope1": 0.04, "slope2": 0.218, "optimal": 0.80},
            },
        },
    },
}
