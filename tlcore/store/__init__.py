"""Where things are kept: the workspace, run folders, the index, jobs and their processes."""
