"""Work the app runs off the GUI thread: the job queue, the project session's jobs, classification, slide loading, exports."""
