"""Built-in importance measures. Importing this package registers them all."""

from importance.measures import basic, controls, fisher, mas, trajectory  # noqa: F401
