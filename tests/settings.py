"""Settings for in-process tests: the real settings plus a PostgreSQL alias.

The storage contract runs against both aliases ("default" is SQLite, "postgres" is
PostgreSQL), so one suite proves both backends keep the same promises.
"""

from __future__ import annotations

import os

import dj_database_url

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)

from config.settings import *  # noqa: F403
from config.settings import DATABASES

from tests.support.processes import POSTGRES_ADMIN_URL

DATABASES["postgres"] = dj_database_url.parse(
    POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/collab_unit", conn_max_age=0
)
DATABASES["default"]["TEST"] = {"NAME": None}
# One test database per pytest process: runs started side by side (a developer's and
# an editor's save hook, say) would otherwise create and drop the same database.
DATABASES["postgres"]["TEST"] = {"DEPENDENCIES": [], "NAME": f"test_collab_unit_{os.getpid()}"}
