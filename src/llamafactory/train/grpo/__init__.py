"""Group-relative policy optimisation: sample several answers per prompt and learn from how they rank."""
