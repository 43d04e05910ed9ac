"""Reports and optuna-dashboard."""
