"""Reward modelling: a scalar head trained so chosen answers outscore rejected ones."""
