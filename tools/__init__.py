"""Build and test tooling of the course (not part of the installed package)."""
