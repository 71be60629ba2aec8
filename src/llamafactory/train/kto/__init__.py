"""Kahneman-Tversky optimisation: learning from answers tagged good or bad, no pairs needed."""
