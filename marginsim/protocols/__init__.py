"""Protocols and venues that hold margin debt, and the network that links them."""
