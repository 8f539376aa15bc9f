"""voxtutor test suite."""
