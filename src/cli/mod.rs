//! Subcommands, one file each. Arguments (clap derive, doc comments are the
//! help text) are validated here and turned into library calls; errors come
//! back as `anyhow` chains and are printed on one line.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 parity gate failed.
//!
//! Built with the feature `cli` (default); [`main`] is the binary's,
//! [`run`] the same on given arguments.

mod args;
mod calibrate;
mod check;
mod convert;
mod inspect;
mod optimize;
mod quantize;
mod run;
mod sensitivity;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (bad model, bad input, I/O).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: bad command-line usage (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the quantized model failed the parity gate.
pub const EXIT_GATE: u8 = 3;

/// Quantize FP32 ONNX models to INT8, and prove the result still computes
/// what the original did.
///
/// Exit codes: 0 success, 1 error (the cause is printed on one line), 2 bad
/// usage, 3 the quantized model failed the parity gate.
#[derive(Debug, Parser)]
#[command(name = "onnxq", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Convert(convert::Args),
    Optimize(optimize::Args),
    Calibrate(calibrate::Args),
    Quantize(quantize::Args),
    Check(check::Args),
    Run(run::Args),
    Sensitivity(sensitivity::Args),
}

/// The process's arguments, run: what the `onnxq` binary does.
pub fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os()))
}

/// Parses `args` (the program name first), runs, prints errors, returns
/// the exit code. The Python package's `onnxq` command calls this.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Optimize(a) => optimize::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Check(a) => check::run(a),
        Command::Run(a) => run::run(a),
        Command::Sensitivity(a) => sensitivity::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            EXIT_ERROR
        }
    }
}

/// The whole cause chain on one line, outermost first, without repeating a
/// cause its parent already quoted; control characters (from node and
/// tensor names) escaped, so the line is one line and terminal-safe.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    crate::error::printable(&parts.join(": ")).into_owned()
}
