"""batchctl's exit codes, the same for every command."""

EXIT_OK = 0
EXIT_NOT_COMPLETED = 1
"""The batch (or the file, for `validate`) did not come out as asked: failed validation, ended
other than completed, not finished yet, no such key."""
EXIT_TOOL_ERROR = 2
"""The command could not do its job: a bad argument, a refused value, an unreachable API."""
