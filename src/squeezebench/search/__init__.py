"""``squeezebench search``: the best variant under a quality tolerance, found by a sampler (Optuna) with successive
halving, every trial an ordinary record made by the runner (candidates, tolerance, trials, state, strategy)."""
