"""Module-level tools on annotated models: inputs, profiling, quantization by module, extraction, comparison."""
