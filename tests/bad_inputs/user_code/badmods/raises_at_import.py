"""A user module that fails while it is imported (not with an ImportError)."""
raise RuntimeError("this module cannot be imported on a Tuesday")
