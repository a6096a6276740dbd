//! Load generator for the Ferrovia benchmarks.
fn main() {}
