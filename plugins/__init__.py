"""vlmbench's built-in plugins, installed as ``vlmbench_plugins`` and registered through the
``vlmbench`` entry-point group exactly like third-party plugins."""
