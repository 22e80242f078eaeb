//! How the `onnxq` command and the Python extension set up mimalloc, their
//! global allocator (each declares it; this sets its options).
//!
//! The executor, tract and the gate free and reallocate the same large
//! buffers on every sample. mimalloc's default purging returns freed pages
//! to the kernel, and each reuse then costs a page fault and a zeroed
//! (often 2 MiB transparent huge) page. A delay of 100 s (the default is
//! 1 s) still left 320 MiB purged and re-faulted in `onnxq check` of the
//! PaddleOCR recognizer (clear_page_erms 40% of its profile); never purging
//! took it from 1.59 s to 1.00 s (system time 0.96 → 0.06 s), the default
//! `quantize` from 11.1 s to 9.7 s, peak 719 → 688 MB. Peak memory is the
//! same: what is kept is what was in use at the peak.
//!
//! Measured and not taken: no transparent huge pages
//! (`mi_option_allow_thp` 0). On a kernel whose THP defrag is `madvise`
//! the first touch of a 2 MiB page may stall in direct compaction: the
//! default `quantize` of the PaddleOCR detector at 640 px took 7.5–7.9 s
//! without them against 8.1–9.9 s with them (three runs each, alternating;
//! system time 0.7 against 2.3–4.5 s), but the recognizer's peak memory
//! rose from 0.67–0.74 GB to 1.03–1.09 GB at the same time, and
//! ResNet-50's from 2.49 to 2.91 GB.

/// mimalloc's `mi_option_purge_delay` (the `mi_option_e` enum of the
/// mimalloc v3 sources libmimalloc-sys builds; `MIMALLOC_PURGE_DELAY` in
/// the environment).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never purge. Call once, before the first large allocation.
pub fn configure_mimalloc() {
    // SAFETY: sets one process-wide integer option; mimalloc reads it on
    // its next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
