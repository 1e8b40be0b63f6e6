"""What a freeze costs in memory and compute, estimated without running the model."""
