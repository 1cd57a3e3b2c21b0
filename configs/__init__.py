"""The task configs (YAML), shipped inside the package as `lotterycli.configs`."""
