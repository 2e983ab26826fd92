"""Compression after distillation: pruning (``prune``), int8 quantization (``quantize``), cost
measurement of any predictor (``measure``), the shipping stage of a run (``ship``) and its report
(``report``). Submodules are imported where used: the course runner needs ``prune`` only, and its
optional backends (Torch-Pruning, ONNX) load on first use."""
