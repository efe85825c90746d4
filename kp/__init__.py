"""keyphrase-pipeline core: settings, lake layout, data contracts, Spark sessions, command line."""

__version__ = "0.1.0"
