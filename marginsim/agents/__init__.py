"""Trader populations and strategic individual agents."""
