//! The `onnxq` command line: parse arguments, run a subcommand, map the
//! outcome to an exit code. All the work is in the library; `cli/` turns
//! arguments into library calls and prints results.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
