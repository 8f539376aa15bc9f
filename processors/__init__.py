"""Frame processors and text aggregators for the voxtutor pipeline."""
