"""Transfer Learning Studio core: datasets, models, training runs and their records.

Pure Python over TensorFlow/Keras 3; knows nothing of the web UI. Also usable from
Python and from the command line (``python -m tlcore``).
"""

__version__ = "0.1.0"
