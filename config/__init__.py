"""Settings: one frozen object, loaded once by the supervisor."""

from config.settings import ConfigError, RestartPolicy, SesSettings, Settings, load

__all__ = ["ConfigError", "RestartPolicy", "SesSettings", "Settings", "load"]
