"""Where events go: stdout, a file, a webhook. Each behind the one :class:`Sink` protocol."""
