"""The HTTP routes, one router per resource, and what they depend on."""
