//! The `onnxq` command line: parse arguments, run a subcommand, map the
//! outcome to an exit code. All the work is in the library; `cli/` turns
//! arguments into library calls and prints results.

use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Freed pages stay with the allocator (onnxq::allocator says why).
    onnxq::allocator::configure_mimalloc();
    onnxq::cli::main()
}
