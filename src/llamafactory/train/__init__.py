"""Training: tuner.run_exp dispatches to one recipe per stage (train/<stage>/workflow.py)."""
