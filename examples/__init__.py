"""Example apps that use the kit (run from the repository root, which puts `examples` on the path)."""
