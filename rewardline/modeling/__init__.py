"""The reward model: backbone + scalar head, input formatting, tokenisation, device, scoring."""
