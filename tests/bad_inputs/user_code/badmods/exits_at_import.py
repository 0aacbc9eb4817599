"""A user module that calls sys.exit(0) at import: validation must not end 'successfully'."""
import sys

sys.exit(0)
