"""Example applications of gtn_py (users of the library, never imported by it)."""
