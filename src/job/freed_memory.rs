//! When the memory the protocol frees goes back to the OS. The binary's global allocator
//! is mimalloc (src/main.rs); in a binary on another allocator these calls change nothing.

/// `mi_option_purge_delay` in the option enum of mimalloc v3 (bundled by libmimalloc-sys
/// 0.1.49, which does not export the constant; checked: MIMALLOC_PURGE_DELAY=-1 sets it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// An hour, in ms: within a job mimalloc keeps freed memory. Its default (1 s) decommitted
/// each garbling chunk's freed buffers and the next chunk's were faulted in and zeroed again
/// (160x160 image: 11.7 s -> 5.5 s of kernel time, serve 21.1 s -> 17.4 s). Not -1 (never):
/// then frees are not even marked for purging, `release` finds nothing to hand back, and one
/// `serve --study` process grew slice by slice while its live heap stayed flat.
const PURGE_DELAY_MS: std::ffi::c_long = 3_600_000;

/// Keep freed memory for reuse within a job. A MIMALLOC_PURGE_DELAY set by the user wins.
/// Call first thing in `main`, before any other thread exists.
pub fn keep_within_jobs() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: plain option setter, called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Hand the memory freed so far back to the OS, between the jobs of one process. Kept
/// resident, what a job's threads freed was not all reused by the next job: one `serve
/// --study` process (16x16 CNN, gc engine) grew S1 from 39.6 to 77.6 MiB over 120 slices;
/// with this it stays at about 20 MiB.
pub fn release() {
    // SAFETY: mi_collect frees only the allocator's own empty pages and purges its arenas'
    // free ranges; it touches no live allocation.
    unsafe { libmimalloc_sys::mi_collect(true) };
    // mi_collect collects the calling thread's pages only; the GEMMs' rayon workers hold
    // pages of their own, and each collects its own.
    rayon::broadcast(|_| {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
}
