"""rewl: replica-exchange Wang-Landau sampling of neural-network entropy landscapes."""
__version__ = "0.1.0"
