"""Airflow plugin: the "Keyphrases" page (model versions, run stats, search, plots).

Served by a FastAPI app mounted by Airflow's API server at ``/keyphrases`` and linked in the navigation
(``external_views``, destination ``nav``). Plugin apps are not behind Airflow's auth, so the app checks
the caller's Airflow token itself (``keyphrase_ui.auth``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from keyphrase_ui.app import URL_PREFIX, app


class KeyphrasesPlugin(AirflowPlugin):
    name = "keyphrases"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Keyphrase recommendations"}]
    external_views = [
        {
            "name": "Keyphrases",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "keyphrases",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/static/icon.svg",
        }
    ]
