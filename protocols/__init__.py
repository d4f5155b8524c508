"""What to run: protocol and station files (pydantic models) and their compilation into plans. No I/O to instruments, no clocks."""
