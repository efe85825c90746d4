"""The module Airflow loads from the plugins folder: registers the "Keyphrases" page and its FastAPI app.

The implementation lives in the ``keyphrase_ui`` package beside this file (kept out of Airflow's own
plugin scan by ``.airflowignore``, because Airflow would import ``keyphrase_ui/app.py`` as a top-level
module named ``app``).
"""

from keyphrase_ui import KeyphrasesPlugin

__all__ = ["KeyphrasesPlugin"]
