//! Benchmark programs; see `benches/` and `src/bin/`.
