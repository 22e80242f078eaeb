//! The `onnxq` command line: parse arguments, run a subcommand, map the
//! outcome to an exit code. All the work is in the library; `cli/` turns
//! arguments into library calls and prints results.

use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the `mi_option_e` enum of the
/// mimalloc v3 sources libmimalloc-sys builds; `MIMALLOC_PURGE_DELAY` in
/// the environment).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Freed pages stay with the allocator until the process exits: the
    // executor, tract and the gate free and reallocate the same large
    // buffers on every sample, and each return to the kernel costs a
    // page fault and a zeroed (often 2 MiB transparent huge) page when the
    // memory is used again. Peak memory is the same: what is kept is what
    // was in use at the peak. A delay of 100 s (mimalloc's default is 1 s)
    // still left 320 MiB purged and re-faulted in `onnxq check` of the
    // PaddleOCR recognizer (clear_page_erms 40% of its profile): never
    // purging took it from 1.59 s to 1.00 s (system time 0.96 -> 0.06 s),
    // the default `quantize` from 11.1 s to 9.7 s, peak 719 -> 688 MB.
    // SAFETY: sets one process-wide integer option before any thread
    // exists; mimalloc reads it on its next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    onnxq::cli::main()
}
