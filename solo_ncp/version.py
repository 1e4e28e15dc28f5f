"""solo-ncp's version, the one place it is written: setup.py reads this file without importing
the package (which checks the solo-learn host), and `solo_ncp.__version__` re-exports it."""
__version__ = "0.1.0"
