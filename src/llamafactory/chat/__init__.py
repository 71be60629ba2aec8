"""Chat: engines that answer conversations with a (fine-tuned) model, and the terminal chat loop."""
