"""edgekit: export small language models, push them to phones and boards, profile them, report.

The public Python API is small on purpose; the CLI (``edgekit ...``) is the main interface.
"""

from edgekit.errors import EdgekitError

__version__ = "0.1.0"
__all__ = ["EdgekitError", "__version__"]
