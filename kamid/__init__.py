"""kamid: the KAMI daemon."""

__version__ = "0.1.0"
