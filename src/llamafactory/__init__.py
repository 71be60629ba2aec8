"""llamafactory: fine-tune large language models from one CLI over YAML configs.

Importing the package stays cheap (no torch) so that `lmf help`, `lmf version` and `lmf env` are instant.
"""

__version__ = "0.1.0"
