"""The graph view: Netron for an exported model."""
