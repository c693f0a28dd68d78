"""Fault injection for the whole feed: a world of emulators, seeded fault plans, kill points."""
