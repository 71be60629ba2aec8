"""PPO: the policy learns from a reward model's scores of its own sampled answers, kept near a reference."""
