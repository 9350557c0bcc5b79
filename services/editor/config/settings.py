"""Django settings for the editor service; every value comes from the environment."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import dj_database_url
from collab_common.env import (
    ImproperlyConfigured,
    env_auth,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_required,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("COLLAB_DATA_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DJANGO_DEBUG", False)
if DEBUG and not env_str("DJANGO_SECRET_KEY"):
    # A throwaway key is acceptable only for a debug run on a developer's machine.
    SECRET_KEY = "insecure-debug-only-key"
else:
    SECRET_KEY = env_required(
        "DJANGO_SECRET_KEY", "it signs sessions and CSRF tokens (generate a long random string)"
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Behind the gateway (and an ingress) the public host and scheme arrive as X-Forwarded-*.
USE_X_FORWARDED_HOST = env_bool("DJANGO_USE_X_FORWARDED_HOST", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "collab",
]

MIDDLEWARE = [
    "collab.middleware.probes_first",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# Any active user signs in here (the admin's own login admits staff only).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL in production, a SQLite file as the embedded default.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'collab.sqlite3'}",
        conn_max_age=600,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # IMMEDIATE transactions take the write lock up front, so concurrent writers wait
    # (up to the timeout) instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis is transport only (fan-out between processes); durability lives in the database.
REDIS_URL = env_str("REDIS_URL")
COLLAB_CHANNEL_PREFIX = env_str("COLLAB_CHANNEL_PREFIX", "collab") or "collab"
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # A Redis that stops answering (a partition) fails calls after 2 s
                # instead of hanging them: publishing and subscribing give up, and the
                # heal loop covers the gap from the database.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 2, "socket_connect_timeout": 2}],
                "prefix": COLLAB_CHANNEL_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Access tokens (JWT HS256) shared with the gateway; enforcement is on in production.
COLLAB_AUTH_REQUIRED, COLLAB_TOKEN_SECRET = env_auth()
COLLAB_TOKEN_TTL_SECONDS = env_int("COLLAB_TOKEN_TTL_SECONDS", 3600, minimum=60)
# Origins (scheme://host[:port], as browsers send them) whose pages may open sockets and
# call the API; empty: any. The same list as the gateway's GATEWAY_ALLOWED_ORIGINS.
COLLAB_ALLOWED_ORIGINS = env_origins("COLLAB_ALLOWED_ORIGINS")

# Limits and tuning of the collaboration core (see README, "Configuration").
COLLAB_MAX_FRAME_BYTES = env_int("COLLAB_MAX_FRAME_BYTES", 2 * 1024 * 1024, minimum=1024)
COLLAB_MAX_DOCUMENT_BYTES = env_int("COLLAB_MAX_DOCUMENT_BYTES", 64 * 1024 * 1024, minimum=1024)
COLLAB_MAX_CONNECTIONS_PER_WORKER = env_int("COLLAB_MAX_CONNECTIONS_PER_WORKER", 5000, minimum=1)
COLLAB_SEND_QUEUE_BYTES = env_int("COLLAB_SEND_QUEUE_BYTES", 8 * 1024 * 1024, minimum=65536)
# Messages per second one socket may send (token bucket), as the gateway's
# GATEWAY_RATE_PER_SECOND / GATEWAY_RATE_BURST; beyond it the socket is closed with 4429.
COLLAB_RATE_PER_SECOND = env_float("COLLAB_RATE_PER_SECOND", 200.0, minimum=0.1)
COLLAB_RATE_BURST = env_int("COLLAB_RATE_BURST", 400, minimum=1)
# COLLAB_HANDSHAKE_TIMEOUT_SECONDS (request heads) is read by config/worker.py: the server
# parses request heads before Django sees a request.
# Updates a worker accepts but cannot make durable yet (the database is slow or down);
# beyond it the sockets whose updates do not fit are closed with 1013.
COLLAB_MAX_PENDING_UPDATES = env_int("COLLAB_MAX_PENDING_UPDATES", 50_000, minimum=1)
COLLAB_COMPACT_AFTER_UPDATES = env_int("COLLAB_COMPACT_AFTER_UPDATES", 500, minimum=2)
COLLAB_SNAPSHOT_HISTORY = env_int("COLLAB_SNAPSHOT_HISTORY", 10, minimum=1)
COLLAB_HEAL_INTERVAL_SECONDS = env_float("COLLAB_HEAL_INTERVAL_SECONDS", 1.0, minimum=0.05)
COLLAB_READY_TIMEOUT_SECONDS = env_float("COLLAB_READY_TIMEOUT_SECONDS", 2.0, minimum=0.1)

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# Images collect static files at build time; a local checkout serves them from the apps
# (WHITENOISE_USE_FINDERS) and only needs the folder to exist.
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Binary updates posted by backends are bounded by the frame limit as well.
DATA_UPLOAD_MAX_MEMORY_SIZE = COLLAB_MAX_FRAME_BYTES

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOG_LEVEL = (env_str("COLLAB_LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(f"COLLAB_LOG_LEVEL must be a logging level, got {LOG_LEVEL!r}")
LOG_FORMAT = env_choice("COLLAB_LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "configured": {"()": "collab_common.logs.formatter", "kind": LOG_FORMAT},
    },
    "filters": {
        "context": {"()": "collab_common.logs.ContextFilter"},
        "redact_tokens": {"()": "collab_common.redaction.RedactTokens"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "configured",
            "filters": ["context", "redact_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
