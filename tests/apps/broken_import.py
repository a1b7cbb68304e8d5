"""A module whose own import fails: asgid must name the missing dependency."""

import helper_that_does_not_exist  # noqa: F401

app = None
