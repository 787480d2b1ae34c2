"""Video: loading, frame sampling, scene detection, temporal modules, long-video compression."""
