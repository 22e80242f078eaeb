//! How the `onnxq` command and the Python extension set up mimalloc, their
//! global allocator (each declares it; this sets its options).
//!
//! The executor, tract and the gate free and reallocate the same large
//! buffers on every sample. Two of mimalloc's defaults turn that into
//! kernel time:
//! - **Purging** returns freed pages to the kernel, and each reuse then
//!   costs a page fault and a zeroed page. A delay of 100 s (the default is
//!   1 s) still left 320 MiB purged and re-faulted in `onnxq check` of the
//!   PaddleOCR recognizer (clear_page_erms 40% of its profile); never
//!   purging took it from 1.59 s to 1.00 s (system time 0.96 → 0.06 s), the
//!   default `quantize` from 11.1 s to 9.7 s, peak 719 → 688 MB. Peak
//!   memory is the same: what is kept is what was in use at the peak.
//! - **Transparent huge pages**: mimalloc asks for them, and on a kernel
//!   whose THP defrag is `madvise` (the common default) each first touch
//!   of a 2 MiB page may stall in direct compaction. `onnxq check` of the
//!   PaddleOCR detector at 640 px, three runs each: 4.2–5.1 s with 1.9–3.6 s
//!   of system time, against 3.5–3.6 s with 0.5–0.6 s without; its default
//!   `quantize` 9.6–10.1 s → 8.0–8.2 s; ResNet-50 35.9 → 35.5 s. User time
//!   is the same (the GEMMs do not miss the larger pages).

/// mimalloc's `mi_option_purge_delay` and `mi_option_allow_thp` (the
/// `mi_option_e` enum of the mimalloc v3 sources libmimalloc-sys builds;
/// `MIMALLOC_PURGE_DELAY` / `MIMALLOC_ALLOW_THP` in the environment).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Never purge, no transparent huge pages. Call once, before the first
/// large allocation (options set later apply to memory mapped later).
pub fn configure_mimalloc() {
    // SAFETY: sets two process-wide integer options; mimalloc reads them
    // when it next maps or purges memory.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
}
