"""A plugin whose import fails, as a broken third-party plugin would."""

import vlmbench_this_module_does_not_exist  # noqa: F401
