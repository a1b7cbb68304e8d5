"""A module that raises while it is imported."""


def configure():
    raise RuntimeError("module-level failure in configure()")


configure()
app = None
