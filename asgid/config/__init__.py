"""Settings: the schema, TOML/env/CLI loading and validation."""

from ._access import ACCESS_FIELDS
from ._kinds import Share, parse_size
from ._load import BindAddress, ConfigError, load_config, parse_bind, validate
from ._schema import (
    AppSettings,
    Config,
    HttpSettings,
    LoggingSettings,
    MetricsSettings,
    ProcessSettings,
    ServerSettings,
    SettingInfo,
    WebSocketSettings,
    WorkersSettings,
    iter_settings,
)

__all__ = [
    "ACCESS_FIELDS",
    "AppSettings",
    "BindAddress",
    "Config",
    "ConfigError",
    "HttpSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ProcessSettings",
    "ServerSettings",
    "SettingInfo",
    "Share",
    "WebSocketSettings",
    "WorkersSettings",
    "iter_settings",
    "load_config",
    "parse_bind",
    "parse_size",
    "validate",
]
