use std::process::ExitCode;

// The protocol allocates and frees buffers of tens of MB per garbling chunk (tables, OT
// matrices, messages). glibc serves each with a fresh mmap; faulting and zeroing those pages
// took about 20% of the servers' CPU. mimalloc reuses freed memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the option enum of mimalloc v3 (bundled by libmimalloc-sys
/// 0.1.49, which does not export the constant; checked: MIMALLOC_PURGE_DELAY=-1 sets it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the OS: by default mimalloc decommits it after a few
/// ms, and the next chunk's buffers were faulted in and zeroed again (measured on a
/// 160x160 image: 11.7 s -> 5.5 s of kernel time, serve 21.1 s -> 17.4 s). Peak memory
/// is unchanged. A MIMALLOC_PURGE_DELAY set by the user wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: plain option setter, called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    ppdenoise::cli::main()
}
