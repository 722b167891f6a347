"""Running generated code: subprocess, time/memory limits, temp dir (grows with the eval issue)."""
