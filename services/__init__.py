"""The loyalty engine's four services, their shared runtime and the CLI."""
