"""The other end of the wire: simulated VT controller (pty), cycler (SCPI over TCP) and TopSpin (automation folder)."""
