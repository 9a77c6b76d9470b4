"""Value checks for configs: one clear line naming the key and what is allowed."""

import math

from ntm.errors import ConfigError

__all__ = ["ConfigError", "finite", "one_of", "positive", "require"]


def require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: must be {allowed}")


def positive(prefix: str, obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value > 0, f"{prefix}.{name}", value, "> 0")


def one_of(prefix: str, obj, name: str, allowed) -> None:
    value = getattr(obj, name)
    require(value in allowed, f"{prefix}.{name}", value, "one of " + ", ".join(map(str, allowed)))


def finite(key: str, value) -> None:
    if isinstance(value, float):
        require(math.isfinite(value), key, value, "a finite number")
