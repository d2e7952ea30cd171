"""sockd: the privileged daemon behind sockctl. See README.md for the trust model."""

from sockctl.protocol import VERSION as __version__

__all__ = ["__version__"]
