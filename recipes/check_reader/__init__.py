"""The check reader: handwritten digit strings read by segmentation, trained end to end through the graph."""
