"""Pictures of gtn_py: the graph gallery and check-reader run reports."""
