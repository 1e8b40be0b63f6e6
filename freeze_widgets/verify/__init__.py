"""The proof that frozen tensors held: snapshots, verification rows, FreezeGuard."""
