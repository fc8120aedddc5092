"""What runs on or against a host over SSH: volumes, registry, start order."""
