"""The graph view's core: netron's files, graph-only model bytes, the frozen overlay."""
