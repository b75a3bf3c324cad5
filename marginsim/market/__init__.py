"""The shared market: matching engine, AMM pools, oracles and exogenous price drivers."""
