"""Pure risk maths: no I/O. Every formula mirrors the contracts' view functions exactly."""
