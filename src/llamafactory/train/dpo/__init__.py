"""Direct preference optimisation and its relatives (hinge, ipo, kto_pair, orpo, simpo)."""
