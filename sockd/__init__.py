"""sockd: the privileged daemon behind sockctl. See README.md for the trust model."""

from sockctl.protocol import VERSION

__version__ = VERSION

__all__ = ["__version__"]
