"""Configuration: settings, mapping rules and the error hierarchy."""

from config.errors import ConfigError, MagbridgeError
from config.settings import DEFAULT_RULES_FILE, Settings, load_settings

__all__ = ["DEFAULT_RULES_FILE", "ConfigError", "MagbridgeError", "Settings", "load_settings"]
