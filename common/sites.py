"""How near a fitted peak must lie to a named site to be that site (shared by plans and analysis)."""

SITE_MATCH_PPM = 0.5
"""A fitted site counts as a named site within this distance in ppm."""
