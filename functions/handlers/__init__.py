"""Lambda handlers: each translates its event into one call on the core service."""
