"""Task machinery picked by the dataset's task: segmentation or classification."""
