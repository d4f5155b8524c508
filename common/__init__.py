"""Shared value types: small, dependency-free definitions that every layer may import (one definition each)."""
