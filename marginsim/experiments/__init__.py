"""Running scenarios: runner, results store, built-in scenarios."""
