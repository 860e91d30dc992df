"""batchctl: the command line people use, and the local stack (the composition root)."""
