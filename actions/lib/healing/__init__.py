"""Self-healing: the brakes on repairs and the checks before a repair changes anything."""
