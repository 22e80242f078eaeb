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
//! No transparent huge pages (`mi_option_allow_thp` 0: mimalloc no longer
//! advises 2 MiB pages for its memory). On a kernel whose THP defrag is
//! `madvise`, the first touch of such a page may stall in direct
//! compaction, and a stage's first sample paid for it: in the gate of the
//! PaddleOCR detector at 640 px the executor took 1.35 s on each worker's
//! first page against 0.35 s on the later ones (every op about 4x slower,
//! its fresh output buffers faulting in), 0.51 s without them. Measured
//! (session 22, the default `quantize`, alternating, same files): the
//! detector at 640 px 7.13 / 8.38 s → 6.14 / 6.19 s (system time 2.5–4.3 s
//! → 0.5 s), ResNet-50 30.5 / 32.1 → 29.7 / 29.9 s, the recognizer 6.9 /
//! 7.5 → 6.9 / 7.4 s, SqueezeNet the same; peak memory the same or lower
//! (recognizer 742 → 671 MB, ResNet-50 1.83 → 1.78 GB). The environment
//! variable `MIMALLOC_ALLOW_THP=0`, read when mimalloc starts, also turns
//! THP off for the whole process (`prctl`), and with it the peak rose
//! instead (the recognizer 648–676 → 728–750 MB in the same session, 0.7
//! → 1.05 GB in session 21, which is why it was not taken then); the
//! option set here only stops mimalloc's own advice.

/// mimalloc's `mi_option_purge_delay` (the `mi_option_e` enum of the
/// mimalloc v3 sources libmimalloc-sys builds; `MIMALLOC_PURGE_DELAY` in
/// the environment).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's `mi_option_allow_thp` (`MIMALLOC_ALLOW_THP`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Never purge; no transparent huge pages. Call once, before the first
/// large allocation.
pub fn configure_mimalloc() {
    // SAFETY: each sets one process-wide integer option; mimalloc reads
    // them on its next purge and its next mapping.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
}
