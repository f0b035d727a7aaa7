"""The composition root: the command line and the wiring of concrete classes."""
