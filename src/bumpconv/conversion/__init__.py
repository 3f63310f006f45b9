"""source -> plan -> packed blob: read a checkpoint's headers, plan every output tensor, then
stream, pack, quantize, hash and write it atomically (plus the engine's sidecars). No torch."""
