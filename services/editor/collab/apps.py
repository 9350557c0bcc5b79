"""Django application configuration for the collaboration core."""

from django.apps import AppConfig


class CollabConfig(AppConfig):
    """The collaboration app: documents, their update log and snapshots."""

    name = "collab"
    verbose_name = "Collaborative documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from collab import checks  # noqa: F401  (registers the system checks)
