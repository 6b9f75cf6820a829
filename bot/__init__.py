"""The platform-agnostic core: settings, the reply flow, the local model and memory write-back."""
